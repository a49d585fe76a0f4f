#!/usr/bin/env python3
"""Write the PyTorch-made fixtures that memaudit's import test reads (issue 17):
crates/memaudit-engine/tests/data/pytorch_{lstm,gru}/.

Each folder is what a PyTorch user would hand to `memaudit import`: a tiny language model built
with plain torch.nn (nn.Embedding -> 2-layer nn.LSTM / nn.GRU -> nn.Linear), seeded random
weights saved with safetensors.torch.save_file(model.state_dict()), a config.json and vocab.json
written by hand in memaudit's format, and probe.safetensors with a fixed token input and the
logits PyTorch computes for it (the expected values of the Rust test, which needs no torch).

    scripts/pytorch_interop.sh --fixture     # makes the venv, then runs this script
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pytorch_common import Memaudit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "memaudit-engine" / "tests" / "data"
VOCAB = ["\n", " ", "a", "e", "i", "m", "n", "p", "s", "y"] + [str(d) for d in range(10)]
VOCAB_SIZE, EMBED, HIDDEN, LAYERS, DROPOUT = len(VOCAB), 5, 6, 2, 0.25


def config(cell):
    family = f"{cell}_lm"
    rnn = {"lstm": "LSTM", "gru": "GRU"}[cell]
    return {
        "format": "memaudit-pytorch/1",
        "family": family,
        "architecture": {"vocab": VOCAB_SIZE, "embed": EMBED, "hidden": HIDDEN,
                         "layers": LAYERS, "dropout": DROPOUT},
        "gate_order": ["i", "f", "g", "o"] if cell == "lstm" else ["r", "z", "n"],
        "modules": [
            {"name": "embedding", "type": "Embedding", "num_embeddings": VOCAB_SIZE,
             "embedding_dim": EMBED},
            {"name": cell, "type": rnn, "input_size": EMBED, "hidden_size": HIDDEN,
             "num_layers": LAYERS, "dropout": DROPOUT},
            {"name": "dropout", "type": "Dropout", "p": DROPOUT},
            {"name": "output", "type": "Linear", "in_features": HIDDEN,
             "out_features": VOCAB_SIZE, "bias": True},
        ],
    }


def vocab():
    return {
        "format": "memaudit-vocab/1",
        "kind": "char",
        "tokens": VOCAB,
        "unk": None,
        "eos": None,
        "canary_scoring": {
            "rule": "memaudit's: zero state, context and prefix unscored, sum of max(0, -log2 p)",
            "initial_state": "zeros",
            "context_token_ids": [0],
            "log_base": 2,
            "token_cost": "max(0, -log2 p)",
            "aggregate": "sum",
            "template": None,
        },
    }


def main():
    for seed, cell in [(17, "lstm"), (18, "gru")]:
        torch.manual_seed(seed)
        cfg = config(cell)
        model = Memaudit(cfg).eval()
        # Larger-than-default weights so the logits depend visibly on every gate.
        with torch.no_grad():
            for p in model.parameters():
                p.uniform_(-0.8, 0.8)
        tokens = torch.randint(0, VOCAB_SIZE, (9, 3), dtype=torch.int64)  # [T, B]
        with torch.no_grad():
            logits = model(tokens).contiguous()
        folder = OUT / f"pytorch_{cell}"
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        save_file({"input": tokens, "logits": logits}, str(folder / "probe.safetensors"))
        (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        (folder / "vocab.json").write_text(json.dumps(vocab(), indent=2) + "\n")
        print(f"{folder.relative_to(ROOT)}: {len(state)} tensors, logits {list(logits.shape)}, "
              f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
