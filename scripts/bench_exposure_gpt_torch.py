#!/usr/bin/env python3
"""Exact exposure over 10^D digit candidates with a GPT: memaudit's trie walk vs the same walk
written in PyTorch (issue 21).

The model is memaudit's (`memaudit bench exposure --run RUN --export DIR` writes its weights,
the conditioning tokens, the digit tokens, 2,000 check scores and its own timing). The PyTorch
walk is the natural PyTorch version of memaudit's: depth by depth, every trie node stepped once
from its parent's key/value cache (`repeat_interleave` to the 10 children, one token per row,
the cache grown by `torch.cat`), depth-first over chunks of --chunk parents so memory stays
bounded; the leaves' scores are the parents' plus one log-probability. Attention over the cached
positions is written with einsum (one query per row). Scores are bits, sum of max(0, -log2 p),
as memaudit's.

    RUN=... (a GPT run, e.g. `memaudit train --model gpt ...`)
    RAYON_NUM_THREADS=2 memaudit bench exposure --run $RUN --digits 6 --repeats 1 \\
        --per-candidate 2000 --export /tmp/bxg --json > /tmp/bxg/memaudit.json
    /tmp/venv-gpt2/bin/python scripts/bench_exposure_gpt_torch.py /tmp/bxg/bench.json [--threads 2]

Checks before reporting: PyTorch's walk scores of the 2,000 check candidates match memaudit's
within 1e-3 bits (float32 products in two libraries, summed over D steps). Not part of CI.
"""
import argparse
import json
import math
import os
import time

from bench_common import require

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_gpt_torch.py
torch = require("torch", "pip install torch")
from safetensors.torch import load_file  # noqa: E402

F = torch.nn.functional
LOG2E = 1.0 / math.log(2.0)


class Gpt:
    """memaudit's GPT (names `gpt.*`, linear weights [out, in]) with an incremental step."""

    def __init__(self, path, cfg):
        t = {k.removeprefix("gpt."): v for k, v in load_file(path).items()}
        self.t, self.cfg = t, cfg
        self.e, self.heads, self.layers = cfg["embed"], cfg["heads"], cfg["layers"]
        self.head = t["wte.weight"] if cfg.get("tie", True) else t["lm_head.weight"]
        self.eps = cfg.get("ln_eps", 1e-5)
        self.approx = "tanh" if cfg.get("gelu", "tanh") in ("tanh", "gelu_tanh", "Tanh") else "none"
        self.scale = 1.0 / math.sqrt(self.e // self.heads) if cfg.get("scale_attn_weights", True) else 1.0

    def ln(self, x, name):
        return F.layer_norm(x, (self.e,), self.t[name + ".weight"], self.t[name + ".bias"], self.eps)

    def step(self, cache, tokens, pos):
        """One token per row at position `pos`; cache: per layer (K, V) [R, pos, E] or None.
        Returns the new cache and log-probabilities [R, V]."""
        t, e, nh = self.t, self.e, self.heads
        d = e // nh
        x = t["wte.weight"][tokens] + t["wpe.weight"][pos]
        new = []
        for k in range(self.layers):
            p = f"h.{k}."
            qkv = F.linear(self.ln(x, p + "ln_1"), t[p + "attn.c_attn.weight"], t[p + "attn.c_attn.bias"])
            q, kk, vv = qkv.split(e, dim=1)
            if cache is None:
                K, V = kk[:, None], vv[:, None]
            else:
                K = torch.cat([cache[k][0], kk[:, None]], dim=1)
                V = torch.cat([cache[k][1], vv[:, None]], dim=1)
            new.append((K, V))
            r, n = K.shape[0], K.shape[1]
            s = torch.einsum("rhd,rnhd->rhn", q.view(r, nh, d), K.view(r, n, nh, d)) * self.scale
            if self.cfg.get("scale_attn_by_inverse_layer_idx", False):
                s = s / (k + 1)
            a = torch.einsum("rhn,rnhd->rhd", s.softmax(-1), V.view(r, n, nh, d)).reshape(r, e)
            x = x + F.linear(a, t[p + "attn.c_proj.weight"], t[p + "attn.c_proj.bias"])
            h = F.linear(self.ln(x, p + "ln_2"), t[p + "mlp.c_fc.weight"], t[p + "mlp.c_fc.bias"])
            x = x + F.linear(F.gelu(h, approximate=self.approx), t[p + "mlp.c_proj.weight"],
                             t[p + "mlp.c_proj.bias"])
        logits = F.linear(self.ln(x, "ln_f"), self.head)
        return new, logits.log_softmax(-1)


def walk(model, conditioning, slots, chunk):
    """Scores (bits) of all candidates, index = mixed radix over `slots` (first most significant)."""
    cache, lp = None, None
    for i, tok in enumerate(conditioning):
        cache, lp = model.step(cache, torch.tensor([tok]), i)
    base = len(conditioning)
    n = len(slots)
    size = math.prod(len(s) for s in slots)
    out = torch.empty(size, dtype=torch.float64)
    slot_t = [torch.tensor(s) for s in slots]

    def expand(depth, cache, lp, scores, first):
        # Children costs: parents' scores + cost of each slot token, row-major (parent, token).
        k = len(slots[depth])
        cost = (-lp[:, slot_t[depth]].double() * LOG2E).clamp(min=0.0)
        child = (scores[:, None] + cost).reshape(-1)
        if depth + 1 == n:
            out[first:first + child.numel()] = child
            return
        per_parent = math.prod(len(s) for s in slots[depth + 1:])
        rows = scores.numel()
        step_parents = max(1, chunk // k)
        for a in range(0, rows, step_parents):
            b = min(rows, a + step_parents)
            sub = [(K[a:b].repeat_interleave(k, 0), V[a:b].repeat_interleave(k, 0)) for K, V in cache]
            toks = slot_t[depth].repeat(b - a)
            c2, lp2 = model.step(sub, toks, base + depth)
            expand(depth + 1, c2, lp2, child[a * k:b * k], first + a * k * per_parent)

    expand(0, cache, lp, torch.zeros(1, dtype=torch.float64), 0)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", help="bench.json written by memaudit bench exposure --export")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk", type=int, default=4096, help="rows per batched step (memaudit's default)")
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    b = json.load(open(a.bench))
    cfg = b["model"]["Gpt"] if "Gpt" in b["model"] else b["model"]
    model = Gpt(b["weights"], cfg)
    times, scores = [], None
    with torch.inference_mode():
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            scores = walk(model, b["conditioning"], b["slot_tokens"], a.chunk)
            times.append(time.perf_counter() - t0)
    idx = torch.tensor(b["check_indices"])
    diff = (scores[idx] - torch.tensor(b["check_scores"], dtype=torch.float64)).abs().max().item()
    sorted_scores = scores.sort().values
    rank_mismatch = 0
    for s, r in zip(b["secrets"], b["secret_ranks"]):
        ours = int(torch.searchsorted(sorted_scores, scores[s], right=True).item())
        rank_mismatch += abs(ours - r) > 0
    torch_s = sorted(times)[len(times) // 2]
    mem_s = b["memaudit"]["walk_seconds"]
    res = {
        "candidates": scores.numel(), "threads": a.threads, "chunk": a.chunk,
        "torch": torch.__version__, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "load_average": os.getloadavg(),
        "memaudit_walk_seconds": mem_s, "torch_walk_seconds": torch_s, "torch_walk_seconds_each": times,
        "torch_over_memaudit": torch_s / mem_s,
        "max_check_difference_bits": diff, "secret_rank_mismatches": rank_mismatch,
    }
    print(json.dumps(res))
    assert diff < 1e-3, f"PyTorch's walk disagrees with memaudit's scores by {diff} bits"


if __name__ == "__main__":
    main()
