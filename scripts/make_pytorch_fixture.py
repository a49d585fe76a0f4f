#!/usr/bin/env python3
"""Write the PyTorch-made fixtures that memaudit's import test reads (issue 17):
crates/memaudit-engine/tests/data/pytorch_{lstm,gru,cnn}/.

Each LM folder is what a PyTorch user would hand to `memaudit import`: a tiny language model built
with plain torch.nn (nn.Embedding -> 2-layer nn.LSTM / nn.GRU -> nn.Linear), seeded random
weights saved with safetensors.torch.save_file(model.state_dict()), a config.json and vocab.json
written by hand in memaudit's format, and probe.safetensors with a fixed token input and the
logits PyTorch computes for it (the expected values of the Rust test, which needs no torch).
pytorch_cnn is the same for the tutorial CNN at an odd image size (asymmetric padding).

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


def cnn_config():
    """TF Privacy's tutorial CNN on 1x17x15 images: TF 'same' padding of conv1 is asymmetric
    there (3 before, 4 after), so the model has an explicit nn.ZeroPad2d."""
    return {
        "format": "memaudit-pytorch/1",
        "family": "tutorial_cnn",
        "architecture": {"channels": 1, "height": 17, "width": 15, "classes": 3},
        "modules": [
            {"name": "pad1", "type": "ZeroPad2d", "padding": [3, 4, 3, 4]},
            {"name": "conv1", "type": "Conv2d", "in_channels": 1, "out_channels": 16,
             "kernel_size": 8, "stride": 2, "padding": 0, "bias": True},
            {"name": "relu1", "type": "ReLU"},
            {"name": "pool1", "type": "MaxPool2d", "kernel_size": 2, "stride": 1, "padding": 0},
            {"name": "conv2", "type": "Conv2d", "in_channels": 16, "out_channels": 32,
             "kernel_size": 4, "stride": 2, "padding": 0, "bias": True},
            {"name": "relu2", "type": "ReLU"},
            {"name": "pool2", "type": "MaxPool2d", "kernel_size": 2, "stride": 1, "padding": 0},
            {"name": "flatten", "type": "Flatten"},
            {"name": "fc1", "type": "Linear", "in_features": 64, "out_features": 32, "bias": True},
            {"name": "relu3", "type": "ReLU"},
            {"name": "fc2", "type": "Linear", "in_features": 32, "out_features": 3, "bias": True},
        ],
    }


def write_cnn():
    torch.manual_seed(19)
    cfg = cnn_config()
    model = Memaudit(cfg).eval()
    images = torch.rand(4, 1, 17, 15)
    with torch.no_grad():
        logits = model(images).contiguous()
    folder = OUT / "pytorch_cnn"
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    save_file({"input": images, "logits": logits}, str(folder / "probe.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    print(f"{folder.relative_to(ROOT)}: {len(state)} tensors, logits {list(logits.shape)}")


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
    write_cnn()


if __name__ == "__main__":
    main()
