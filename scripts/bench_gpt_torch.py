#!/usr/bin/env python3
"""memaudit's GPT training step vs PyTorch's and Opacus ghost clipping's (issue 21).

The same GPT-2-architecture shape on both sides (default: issue 21's proof shape, 4 blocks,
width 128, 4 heads, context 128, batch 16, vocabulary 96, tanh GELU, untied head). PyTorch's model
is written with nn.Embedding / nn.LayerNorm / nn.Linear and an untied head, so Opacus can run
ghost clipping (fast gradient clipping) on it.

What is timed, on both sides, is one gradient computation (forward, mean cross-entropy, backward):
- plain: PyTorch autograd vs `Model::gradients` without clipping;
- DP: Opacus 1.6 `grad_sample_mode="ghost"` (its two backward passes: per-sample norms, then the
  clipped sum, left in `.grad`) vs memaudit's per-example norms and clipped sum (flat C = 1).
The optimizer update and DP noise are left out on both sides (the same for any method with this
parameter count). Both sides use 2 threads (torch.set_num_threads(2); RAYON_NUM_THREADS=2). The
sides alternate for --rounds rounds; each figure is a median of --repeats steps after warm-up,
and the table gives the median over rounds.

    cargo build --release -p memaudit-engine --example bench_gpt
    /tmp/venv-gpt2/bin/python scripts/bench_gpt_torch.py [--rounds 3] [--repeats 5]

Needs torch and opacus (pip install torch opacus==1.6.0); not part of CI.
"""
import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import warnings

from bench_common import require, timed

# OpenMP threads spin at barriers by default. On a shared machine (more runnable threads than
# cores) that made 2-thread PyTorch 3x slower than 1 thread here (1,300 vs 416 ms a step);
# passive waiting removes the penalty. Set before torch loads its OpenMP runtime; an explicit
# OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch = require("torch", "pip install torch")
opacus = require("opacus", "pip install opacus==1.6.0")
from opacus import PrivacyEngine  # noqa: E402

nn = torch.nn
F = torch.nn.functional
warnings.filterwarnings("ignore")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Block(nn.Module):
    """GPT-2's pre-LayerNorm block with nn.Linear projections (Conv1D's transpose)."""

    def __init__(self, e, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(e), nn.LayerNorm(e)
        self.c_attn, self.attn_proj = nn.Linear(e, 3 * e), nn.Linear(e, e)
        self.c_fc, self.mlp_proj = nn.Linear(e, 4 * e), nn.Linear(4 * e, e)

    def forward(self, x):
        b, t, e = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(e, dim=2)
        q, k, v = (z.view(b, t, self.heads, e // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(a.transpose(1, 2).reshape(b, t, e))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, vocab, n_ctx, e, layers, heads):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, e), nn.Embedding(n_ctx, e)
        self.h = nn.ModuleList(Block(e, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(e)
        self.lm_head = nn.Linear(e, vocab, bias=False)  # untied: ghost clipping refuses tied

    def forward(self, ids):  # [B, T], batch first (Opacus)
        # contiguous: Opacus' embedding norm sampler views the indices flat
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).repeat(ids.shape[0], 1)
        x = self.wte(ids) + self.wpe(pos)
        for blk in self.h:
            x = blk(x)
        return self.lm_head(self.ln_f(x))


def torch_steps(a):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    y = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)

    torch.manual_seed(1)
    plain_model = Gpt(a.vocab, a.seq, a.width, a.layers, a.heads)
    crit = nn.CrossEntropyLoss()

    def plain():
        plain_model.zero_grad(set_to_none=True)
        crit(plain_model(x).reshape(-1, a.vocab), y.reshape(-1)).backward()

    torch.manual_seed(1)
    dp_model = Gpt(a.vocab, a.seq, a.width, a.layers, a.heads)
    opt = torch.optim.SGD(dp_model.parameters(), lr=0.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=a.batch)
    dp_model, opt, dp_crit, _ = PrivacyEngine().make_private(
        module=dp_model, optimizer=opt, criterion=nn.CrossEntropyLoss(), data_loader=loader,
        noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False,
        grad_sample_mode="ghost")

    def ghost():
        opt.zero_grad(set_to_none=True)
        # Opacus' ghost-clipping loss needs the [B, T, V] -> [B*T, V] shape to find each
        # example's tokens: it reduces the per-token losses per sample.
        loss = dp_crit(dp_model(x).reshape(-1, a.vocab), y.reshape(-1), shape=(a.batch, a.seq))
        loss.backward()

    params = sum(p.numel() for p in plain_model.parameters())
    return plain, ghost, params


def memaudit_step(a):
    exe = os.path.join(ROOT, "target", "release", "examples", "bench_gpt")
    if not os.path.exists(exe):
        sys.exit("error: build it first: cargo build --release -p memaudit-engine --example bench_gpt")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    out = subprocess.run([exe, str(a.layers), str(a.width), str(a.seq), str(a.batch), str(a.repeats)],
                         capture_output=True, text=True, check=True, env=env).stdout
    # "GPT 4x128 (4 heads, tie false, 834304 params), T 128, B 16: plain 227.5 ms, DP 241.9 ms"
    m = re.search(r"tie false, (\d+) params\).*plain ([\d.]+) ms, DP ([\d.]+) ms", out)
    if not m:
        sys.exit(f"error: unexpected bench_gpt output:\n{out}")
    return float(m.group(2)), float(m.group(3)), int(m.group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vocab", type=int, default=96)  # bench_gpt's
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    plain, ghost, torch_params = torch_steps(a)
    rows = {k: [] for k in ("memaudit_plain", "memaudit_dp", "torch_plain", "opacus_ghost")}
    for _ in range(a.rounds):
        mp, md, ours = memaudit_step(a)
        rows["memaudit_plain"].append(mp)
        rows["memaudit_dp"].append(md)
        rows["torch_plain"].append(timed(plain, a.repeats, warmup=1))
        rows["opacus_ghost"].append(timed(ghost, a.repeats, warmup=1))
    med = {k: statistics.median(v) for k, v in rows.items()}
    result = {
        "shape": dict(layers=a.layers, width=a.width, heads=a.heads, seq=a.seq, batch=a.batch,
                      vocab=a.vocab, tie=False, memaudit_params=ours, torch_params=torch_params),
        "threads": a.threads, "rounds": a.rounds, "repeats": a.repeats,
        "torch": torch.__version__, "opacus": opacus.__version__,
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "load_average": os.getloadavg(),
        "median_ms": med, "per_round_ms": rows,
        "plain_memaudit_over_torch": med["memaudit_plain"] / med["torch_plain"],
        "dp_opacus_over_memaudit": med["opacus_ghost"] / med["memaudit_dp"],
    }
    if a.json:
        print(json.dumps(result))
        return
    print(f"GPT {a.layers}x{a.width}, {a.heads} heads, T {a.seq}, B {a.batch}, V {a.vocab}, untied "
          f"({ours} / {torch_params} params), {a.threads} threads, medians of {a.rounds} rounds x "
          f"{a.repeats} steps; torch {torch.__version__}, opacus {opacus.__version__}, "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':<8} {'memaudit':>10} {'pytorch':>10} {'ratio':>24}")
    print(f"{'plain':<8} {med['memaudit_plain']:>8.1f}ms {med['torch_plain']:>8.1f}ms "
          f"{result['plain_memaudit_over_torch']:>8.2f}x (memaudit / torch)")
    print(f"{'DP':<8} {med['memaudit_dp']:>8.1f}ms {med['opacus_ghost']:>8.1f}ms "
          f"{result['dp_opacus_over_memaudit']:>8.2f}x (opacus ghost / memaudit)")
    assert math.isclose(ours, torch_params), (ours, torch_params)


if __name__ == "__main__":
    main()
