#!/usr/bin/env python3
"""GPT-2 fixtures for memaudit's import test (issue 21), and a check of memaudit's export.

    python scripts/make_gpt2_fixture.py            # write crates/memaudit-engine/tests/data/gpt2_*/
    python scripts/make_gpt2_fixture.py --check D  # GPT2LMHeadModel.from_pretrained(D) must
                                                   # reproduce D/probe.safetensors' logits

Needs torch, transformers and safetensors from PyPI (scripts/gpt2_interop.sh makes the venv).

Fixtures: tiny random GPT2LMHeadModel's built by transformers itself, in the layouts real
checkpoints come in:
- gpt2_tied: tied head, GPT-2's defaults (gelu_new, scale_attn_weights), written the way the
  hub's original `gpt2` files are: no `transformer.` prefix, no lm_head.weight, the
  `attn.bias` causal-mask buffers (bool) and `attn.masked_bias` (-1e4) included;
- gpt2_untied: tie_word_embeddings = false, exact GELU, scale_attn_by_inverse_layer_idx, a
  non-default layer_norm_epsilon, written by save_pretrained (prefixed names, lm_head.weight).
Each folder also has probe.safetensors: `input_ids` (int64, [B, T], batch-first) and the
`logits` transformers computes for them in eval mode ([B, T, V], float32). The Rust test needs
no torch: it imports the folder and compares logits within 1e-4.
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "memaudit-engine" / "tests" / "data"
VOCAB, N_POS, EMBD, LAYERS, HEADS = 48, 16, 16, 2, 2
B, T = 2, 12


def probe(model, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (B, T), generator=g)
    with torch.no_grad():
        logits = model(ids).logits.float().contiguous()
    return {"input_ids": ids.to(torch.int64).contiguous(), "logits": logits}


def build(seed, **kw):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=N_POS, n_embd=EMBD, n_layer=LAYERS,
                     n_head=HEADS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **kw)
    m = GPT2LMHeadModel(cfg).eval()
    # Perturb LayerNorms and biases (initialised to 1 and 0) so every tensor matters.
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


def tied():
    m = build(1)
    d = OUT / "gpt2_tied"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    m.config.to_json_file(d / "config.json")
    sd = {k.removeprefix("transformer."): v.contiguous()
          for k, v in m.state_dict().items() if k != "lm_head.weight"}
    for k in range(LAYERS):
        sd[f"h.{k}.attn.bias"] = torch.tril(torch.ones(N_POS, N_POS, dtype=torch.bool)).view(
            1, 1, N_POS, N_POS)
        sd[f"h.{k}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    save_file(probe(m, 11), d / "probe.safetensors")
    # The folder loads back in transformers (buffers are ignored as unexpected keys).
    back = GPT2LMHeadModel.from_pretrained(d).eval()
    p = load_file(d / "probe.safetensors")
    with torch.no_grad():
        diff = (back(p["input_ids"]).logits - p["logits"]).abs().max().item()
    assert diff < 1e-5, diff


def untied():
    m = build(2, tie_word_embeddings=False, activation_function="gelu",
              scale_attn_by_inverse_layer_idx=True, layer_norm_epsilon=1e-6)
    with torch.no_grad():
        m.lm_head.weight.copy_(0.02 * torch.randn_like(m.lm_head.weight))
    d = OUT / "gpt2_untied"
    shutil.rmtree(d, ignore_errors=True)
    m.save_pretrained(d, safe_serialization=True)
    for extra in ("generation_config.json",):
        (d / extra).unlink(missing_ok=True)
    save_file(probe(m, 12), d / "probe.safetensors")


def check(folder):
    d = Path(folder)
    m = GPT2LMHeadModel.from_pretrained(d).eval()
    p = load_file(d / "probe.safetensors")
    with torch.no_grad():
        got = m(p["input_ids"]).logits
    diff = (got - p["logits"]).abs().max().item()
    print(json.dumps({"folder": str(d), "max_abs_logit_diff": diff,
                      "tie_word_embeddings": m.config.tie_word_embeddings}))
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2]))
    tied()
    untied()
    total = sum(f.stat().st_size for f in OUT.glob("gpt2_*/*"))
    print(f"wrote {OUT}/gpt2_tied, gpt2_untied ({total} bytes)")
