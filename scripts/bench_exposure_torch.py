#!/usr/bin/env python3
"""Exact exposure over 10^D digit candidates in PyTorch, side by side with `memaudit bench exposure`.

The same model (memaudit's exported weights: embedding -> nn.LSTM -> linear, PyTorch's gate order
and tensor layout) and the same computation as memaudit's trie walk (The Secret Sharer, Carlini et
al. 2019: score every candidate of R by walking the candidate trie breadth-first, each shared
prefix state computed once), written the natural PyTorch way: depth by depth, states stepped in
chunks of 65,536 rows. Also the two per-candidate baselines: each candidate as its own sequence
(conditioning included), and each candidate from the shared conditioning state.

usage:
    memaudit bench exposure --export /tmp/bx --json > /tmp/bx/memaudit.json
    python3 scripts/bench_exposure_torch.py /tmp/bx/bench.json [--threads N] [--repeats 3]

Checks before timing: PyTorch's scores of 2,000 candidates match memaudit's within 1e-3 bits
(float32 sums over D steps), and the ranks of memaudit's 100 secrets agree. Prints medians and the
memaudit/PyTorch ratios. Needs torch (CPU wheel: pip install torch); fails loudly without it.
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

try:
    import numpy as np
    import torch
except ImportError as e:  # LOUD: a missing baseline must never look like a result.
    sys.stderr.write(
        "\n" + "!" * 78 + "\n"
        f"!! bench_exposure_torch.py needs PyTorch and NumPy: {e}\n"
        "!! install them (e.g. python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch)\n"
        "!! and run this script with that interpreter. NO COMPARISON WAS MADE.\n"
        + "!" * 78 + "\n"
    )
    sys.exit(3)

CHUNK = 65536
LN2 = math.log(2.0)


def read_safetensors(path):
    """Tensors of a safetensors file (8-byte little-endian header length, JSON header, data)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            continue
        a, b = meta["data_offsets"]
        arr = np.frombuffer(data[base + a : base + b], dtype="<f4").reshape(meta["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


class Lm(torch.nn.Module):
    def __init__(self, cfg, w):
        super().__init__()
        c = cfg
        self.vocab, self.embed_dim, self.hidden, self.layers = c["vocab"], c["embed"], c["hidden"], c["layers"]
        self.embed = torch.nn.Embedding(self.vocab, self.embed_dim)
        self.lstm = torch.nn.LSTM(self.embed_dim, self.hidden, self.layers)
        self.out = torch.nn.Linear(self.hidden, self.vocab)
        sd = {"embed.weight": w["embedding.weight"], "out.weight": w["output.weight"], "out.bias": w["output.bias"]}
        for k in range(self.layers):
            for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                sd[f"lstm.{p}_l{k}"] = w[f"lstm{k}.{p}"]
        self.load_state_dict(sd)
        self.eval()

    def step(self, tokens, h, c):
        """One token per row: returns log2-probabilities [rows, vocab] and the new state."""
        x = self.embed(tokens)[None]
        y, (h, c) = self.lstm(x, (h, c))
        return torch.log_softmax(self.out(y[0]), dim=-1) / LN2, h, c


def conditioned(lm, cond):
    h = torch.zeros(lm.layers, 1, lm.hidden)
    c = torch.zeros(lm.layers, 1, lm.hidden)
    lp = None
    for t in cond:
        lp, h, c = lm.step(torch.tensor([t]), h, c)
    return lp, h, c


@torch.inference_mode()
def trie_walk(lm, cond, slot_tokens):
    """Log-perplexity (bits) of every candidate, candidate index order (first digit most significant)."""
    lp, h, c = conditioned(lm, cond)
    scores = torch.zeros(1, dtype=torch.float64)
    rows = 0
    depth = len(slot_tokens)
    for d, toks in enumerate(slot_tokens):
        toks = torch.tensor(toks)
        k = len(toks)
        # children: parent-major, token-minor (trie order)
        scores = (scores[:, None] - lp[:, toks].double()).reshape(-1)
        if d == depth - 1:
            break
        n = scores.numel()
        nxt_tokens = toks.repeat(n // k)
        new_lp = torch.empty(n, lm.vocab)
        new_h = torch.empty(lm.layers, n, lm.hidden)
        new_c = torch.empty(lm.layers, n, lm.hidden)
        parents = n // k
        pchunk = max(1, CHUNK // k)
        for p0 in range(0, parents, pchunk):
            p1 = min(parents, p0 + pchunk)
            hh = h[:, p0:p1].repeat_interleave(k, dim=1)
            cc = c[:, p0:p1].repeat_interleave(k, dim=1)
            a, b = p0 * k, p1 * k
            l2, h2, c2 = lm.step(nxt_tokens[a:b], hh, cc)
            new_lp[a:b], new_h[:, a:b], new_c[:, a:b] = l2, h2, c2
            rows += b - a
        lp, h, c = new_lp, new_h, new_c
    return scores, rows


def digits_of(i, depth, k=10):
    out = []
    for _ in range(depth):
        out.append(i % k)
        i //= k
    return out[::-1]


@torch.inference_mode()
def per_candidate(lm, cond, slot_tokens, indices, share_prefix, batch=1000):
    """Score candidates each as its own sequence (or from the shared conditioning state)."""
    depth = len(slot_tokens)
    base = conditioned(lm, cond) if share_prefix else None
    out = []
    for b0 in range(0, len(indices), batch):
        idx = indices[b0 : b0 + batch]
        n = len(idx)
        seqs = torch.tensor([[slot_tokens[d][x] for d, x in enumerate(digits_of(i, depth))] for i in idx])
        if share_prefix:
            lp, h, c = base
            lp = lp.expand(n, -1)
            h, c = h.expand(-1, n, -1).contiguous(), c.expand(-1, n, -1).contiguous()
        else:
            h = torch.zeros(lm.layers, n, lm.hidden)
            c = torch.zeros(lm.layers, n, lm.hidden)
            x = torch.tensor(cond)[:, None].expand(-1, n)
            y, (h, c) = lm.lstm(lm.embed(x), (h, c))
            lp = torch.log_softmax(lm.out(y[-1]), dim=-1) / LN2
        s = torch.zeros(n, dtype=torch.float64)
        for d in range(depth):
            s -= lp.gather(1, seqs[:, d : d + 1])[:, 0].double()
            if d + 1 < depth:
                lp, h, c = lm.step(seqs[:, d], h, c)
        out.append(s)
    return torch.cat(out)


def timed(f, repeats):
    ts, r = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        r = f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts, r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench_json", help="bench.json written by `memaudit bench exposure --export DIR`")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--per-candidate", type=int, default=20000)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with open(a.bench_json) as f:
        b = json.load(f)
    wpath = b["weights"]
    if not os.path.isabs(wpath) and not os.path.exists(wpath):
        wpath = os.path.join(os.path.dirname(a.bench_json), os.path.relpath(wpath, os.path.dirname(a.bench_json)))
    if b["model"].get("type") != "lstm_lm":
        sys.exit(f"{a.bench_json}: only the LSTM LM is supported, got {b['model'].get('type')}")
    lm = Lm(b["model"], read_safetensors(wpath))
    cond, slots = b["conditioning"], b["slot_tokens"]
    size = 1
    for s in slots:
        size *= len(s)

    # Correctness first: the same scores and ranks as memaudit.
    scores, rows = trie_walk(lm, cond, slots)
    chk = torch.tensor(b["check_indices"])
    diff = (scores[chk] - torch.tensor(b["check_scores"], dtype=torch.float64)).abs().max().item()
    srt = torch.sort(scores).values
    own = scores[torch.tensor(b["secrets"])]
    # rank = candidates with log-perplexity <= the secret's (ties count against it, as memaudit).
    ranks = torch.searchsorted(srt, own, right=True).tolist()
    rank_mismatch = sum(1 for r, m in zip(ranks, b["secret_ranks"]) if r != m)
    # Scores agree to ~1e-6 bits (float32 in both), but random weights give near-uniform
    # predictions, so many candidates lie within 1e-6 bits of each other: ranks can then move by
    # the number of candidates in that band. Report how far, relative to the rank.
    rank_rel = max(abs(r - m) / m for r, m in zip(ranks, b["secret_ranks"]))
    band = max(
        int(torch.searchsorted(srt, o + 1e-5, right=True) - torch.searchsorted(srt, o - 1e-5, right=True))
        for o in own.tolist()
    )
    if diff > 1e-3:
        sys.exit(f"PyTorch and memaudit disagree: max |score difference| {diff:.3g} bits > 1e-3")
    one = per_candidate(lm, cond, slots, b["check_indices"][:200], share_prefix=False)
    diff_one = (one - scores[chk[:200]]).abs().max().item()

    t_walk, t_walk_all, _ = timed(lambda: trie_walk(lm, cond, slots), a.repeats)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, size, a.per_candidate).tolist()
    t_single, _, _ = timed(lambda: per_candidate(lm, cond, slots, idx, share_prefix=False), a.repeats)
    t_shared, _, _ = timed(lambda: per_candidate(lm, cond, slots, idx, share_prefix=True), a.repeats)
    m = b["memaudit"]
    res = {
        "candidates": size,
        "threads": a.threads,
        "torch": torch.__version__,
        "torch_walk_seconds": t_walk,
        "torch_walk_seconds_each": t_walk_all,
        "torch_walk_rows": rows,
        "torch_per_candidate_per_second": a.per_candidate / t_single,
        "torch_shared_prefix_per_second": a.per_candidate / t_shared,
        "memaudit_walk_seconds": m["walk_seconds"],
        "memaudit_per_candidate_per_second": m["per_candidate_per_second"],
        "per_candidate_speedup": m["per_candidate_per_second"] / (a.per_candidate / t_shared),
        "walk_speedup": t_walk / m["walk_seconds"],
        "max_score_difference_bits": diff,
        "max_per_candidate_difference_bits": diff_one,
        "secret_rank_mismatches": rank_mismatch,
        "secret_rank_max_relative_difference": rank_rel,
        "candidates_within_1e-5_bits_of_a_secret": band,
    }
    if a.json:
        print(json.dumps(res))
        return
    print(f"exact exposure over {size} candidates, LSTM LM {lm.layers}x{lm.hidden}, torch {torch.__version__}, {a.threads} threads, medians of {a.repeats}")
    print(f"  agreement: |PyTorch - memaudit| <= {diff:.2e} bits (2,000 candidates); secret ranks differing: {rank_mismatch} of {len(ranks)}, by at most {rank_rel:.1e} of the rank (up to {band} candidates lie within 1e-5 bits of a secret)")
    print(f"{'':38}{'memaudit':>12}{'PyTorch':>12}{'ratio':>10}")
    print(f"{'full trie walk, seconds':38}{m['walk_seconds']:>12.3f}{t_walk:>12.3f}{t_walk / m['walk_seconds']:>9.2f}x")
    # memaudit's one-by-one rate starts every candidate from the shared conditioning state.
    print(f"{'one by one from shared prefix, c/s':38}{m['per_candidate_per_second']:>12.0f}{a.per_candidate / t_shared:>12.0f}{m['per_candidate_per_second'] / (a.per_candidate / t_shared):>9.2f}x")
    print(f"{'one by one, own sequence, c/s':38}{'-':>12}{a.per_candidate / t_single:>12.0f}")
    print(f"  trie walk as candidates/s: memaudit {size / m['walk_seconds']:.0f}, PyTorch {size / t_walk:.0f}")


if __name__ == "__main__":
    main()
