"""Plain-PyTorch side of memaudit's export format (docs/pytorch.md), shared by
scripts/pytorch_interop.py and scripts/make_pytorch_fixture.py.

`Memaudit` is the documented snippet: it rebuilds any exported model from config.json's
"modules" list (each entry is a torch.nn class and its keyword arguments).
"""
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn


class Memaudit(nn.Module):
    """The modules of config.json in order; nn.LSTM / nn.GRU outputs are unpacked."""

    def __init__(self, config):
        super().__init__()
        for m in config["modules"]:
            m = dict(m)
            self.add_module(m.pop("name"), getattr(nn, m.pop("type"))(**m))

    def forward(self, x):
        for module in self.children():
            x = module(x)
            x = x[0] if isinstance(x, tuple) else x  # (output, state) of nn.LSTM / nn.GRU
        return x


def load_export(folder):
    """(model in eval mode, config, vocab or None) of an exported folder; strict load."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    model = Memaudit(config).eval()
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    vocab_path = folder / "vocab.json"
    vocab = json.loads(vocab_path.read_text()) if vocab_path.exists() else None
    return model, config, vocab


def relative_difference(a, b):
    """max |a - b| / max |b| (memaudit's PROBE_TOLERANCE measure)."""
    a, b = a.double(), b.double()
    diff = (a - b).abs().max().item()
    scale = b.abs().max().item()
    return 0.0 if diff == 0.0 else diff / scale


@torch.no_grad()
def log_perplexity(model, scoring, canary_token_ids):
    """Log-perplexity in bits of one canary by vocab.json's canary_scoring rule: zero state, feed
    context ++ prefix unscored, sum max(0, -log2 p) over the scored tokens, suffix unscored."""
    tpl = scoring["template"]
    context = scoring["context_token_ids"]
    n_prefix, n_scored = len(tpl["prefix_token_ids"]), len(tpl["scored"])
    tokens = context + list(canary_token_ids)
    x = torch.tensor(tokens, dtype=torch.int64).unsqueeze(1)  # [T, 1], time-major
    logp = torch.log_softmax(model(x)[:, 0, :], dim=-1)  # step t predicts token t + 1
    start = len(context) + n_prefix
    bits = 0.0
    for pos in range(start, start + n_scored):
        ln_p = logp[pos - 1, tokens[pos]].item()
        bits += max(0.0, -ln_p / math.log(scoring["log_base"]))
    return bits
