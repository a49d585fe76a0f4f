#!/usr/bin/env python3
"""memaudit's LiRA shadow set vs the same shadow set in PyTorch (plain) and Opacus 1.6 (DP), issue 16.

The shadow set of `memaudit bench mia`: a target and 2 x PAIRS models per shape, each trained for
EPOCHS epochs on half of a synthetic pool (random pixels with random labels; random token windows)
with SGD lr 0.05 and fixed-size shuffled batches, then every model's signal on the whole pool
(phi for classifiers, the sequence log-likelihood for LMs). DP: clip 1.0, noise multiplier 1.1;
Opacus uses ghost clipping for the MLP and CNN and DPLSTM (per-sample hooks) for the LSTM LM.
2 threads. For each shape and mode, memaudit's bench and the PyTorch run alternate for --rounds
rounds; the figure is the median over every model of every round of the seconds to train one
model, and the scoring time's median over rounds. Ratios > 1: memaudit is faster.

    cargo build --release
    python3 -m venv .venv && .venv/bin/pip install torch opacus==1.6.0
    .venv/bin/python scripts/bench_mia_torch.py [--rounds 3] [--pairs 2] [--examples 2048] [--epochs 1]
"""
import argparse
import json
import statistics
import subprocess
import time
import warnings

from bench_common import SHAPES, memaudit_binary, require

torch = require("torch", "pip install torch")
opacus = require("opacus", "pip install opacus==1.6.0")
from opacus import PrivacyEngine  # noqa: E402
from opacus.layers import DPLSTM  # noqa: E402

from bench_engine_torch import tutorial_cnn  # noqa: E402

nn = torch.nn
warnings.filterwarnings("ignore")


class Lm(nn.Module):
    """LSTM LM, batch first (Opacus' DPLSTM needs it); `dp` swaps in DPLSTM."""

    def __init__(self, vocab, embed, hidden, layers, dp):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.lstm = (DPLSTM if dp else nn.LSTM)(embed, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):
        h, _ = self.lstm(self.emb(x))
        return self.out(h)


def pool(shape, n):
    s = SHAPES[shape]
    g = torch.Generator().manual_seed(42)
    if s["kind"] == "mlp":
        return torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)
    if s["kind"] == "cnn":
        return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    tokens = torch.randint(0, s["vocab"], (n * s["seq"] + 1,), generator=g)
    x = tokens[:-1].reshape(n, s["seq"])
    y = tokens[1:].reshape(n, s["seq"])
    return x, y


def build(shape, dp):
    s = SHAPES[shape]
    if s["kind"] == "mlp":
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    if s["kind"] == "cnn":
        return tutorial_cnn()
    return Lm(s["vocab"], s["embed"], s["hidden"], s["layers"], dp)


def train_one(shape, dp, x, y, batch, epochs, seed):
    """Train one model on (x, y) (its half of the pool); returns the trained module."""
    torch.manual_seed(seed)
    s = SHAPES[shape]
    vocab = s.get("vocab")
    model = build(shape, dp)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch,
                                         shuffle=True, drop_last=True)
    crit = nn.CrossEntropyLoss()
    if dp:
        pe = PrivacyEngine()
        mode = "ghost" if s["kind"] != "lstm" else "hooks"
        if mode == "ghost":
            model, opt, crit, loader = pe.make_private(module=model, optimizer=opt, criterion=crit,
                                                       data_loader=loader, noise_multiplier=1.1, max_grad_norm=1.0,
                                                       poisson_sampling=False, grad_sample_mode="ghost")
        else:
            model, opt, loader = pe.make_private(module=model, optimizer=opt, data_loader=loader,
                                                 noise_multiplier=1.1, max_grad_norm=1.0,
                                                 poisson_sampling=False, grad_sample_mode="hooks")
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = crit(out.reshape(-1, vocab), yb.reshape(-1)) if vocab else crit(out, yb)
            loss.backward()
            opt.step()
    return model


@torch.no_grad()
def signal(shape, model, x, y):
    """phi = z_y - logsumexp_{j != y} z_j for classifiers; sum_t log p(y_t) for LMs."""
    model.eval()
    out = []
    for i in range(0, len(x), 512):
        z = model(x[i:i + 512])
        yb = y[i:i + 512]
        if SHAPES[shape]["kind"] == "lstm":
            lp = torch.log_softmax(z, -1).gather(-1, yb.unsqueeze(-1)).squeeze(-1)
            out.append(lp.sum(1))
        else:
            zy = z.gather(1, yb.unsqueeze(1)).squeeze(1)
            rest = z.scatter(1, yb.unsqueeze(1), float("-inf"))
            out.append(zy - torch.logsumexp(rest, 1))
    return torch.cat(out)


def torch_shadow_set(shape, dp, n, pairs, epochs, batch):
    x, y = pool(shape, n)
    per_model = []
    models = []
    g = torch.Generator().manual_seed(7)
    for i in range(2 * pairs + 1):
        half = torch.randperm(n, generator=g)[: n // 2]
        t = time.perf_counter()
        models.append(train_one(shape, dp, x[half], y[half], batch, epochs, i))
        per_model.append(time.perf_counter() - t)
    t = time.perf_counter()
    for m in models:
        signal(shape, m, x, y)
    return per_model, time.perf_counter() - t


def memaudit_shadow_set(shape, mode, n, pairs, epochs, batch):
    out = subprocess.run(
        [memaudit_binary(), "bench", "mia", "--shapes", shape, "--modes", mode, "--pairs", str(pairs),
         "--examples", str(n), "--epochs", str(epochs), "--batch-size", str(batch), "--json", "--quiet"],
        capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)["results"][0]
    return r["model_seconds_all"], r["score_seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--examples", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--shapes", default="mlp,cnn,lstm")
    ap.add_argument("--modes", default="plain,dp")
    a = ap.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, opacus {opacus.__version__}, {torch.get_num_threads()} threads; "
          f"target + {2 * a.pairs} shadow models, pool {a.examples}, {a.epochs} epoch(s), {a.rounds} rounds")
    print(f"{'shape':<10} {'mode':<6} {'baseline':<14} {'memaudit s/model':>17} {'baseline s/model':>17} "
          f"{'speedup':>8} {'memaudit score s':>17} {'baseline score s':>17}")
    rows = []
    for shape in a.shapes.split(","):
        batch = SHAPES[shape]["batch"]
        for mode in a.modes.split(","):
            dp = mode == "dp"
            baseline = "pytorch" if not dp else ("opacus-ghost" if SHAPES[shape]["kind"] != "lstm" else "opacus-dplstm")
            ours, theirs, ours_score, theirs_score = [], [], [], []
            for _ in range(a.rounds):
                m, s = memaudit_shadow_set(shape, mode, a.examples, a.pairs, a.epochs, batch)
                ours += m
                ours_score.append(s)
                t, s = torch_shadow_set(shape, dp, a.examples, a.pairs, a.epochs, batch)
                theirs += t
                theirs_score.append(s)
            o, t = statistics.median(ours), statistics.median(theirs)
            os_, ts = statistics.median(ours_score), statistics.median(theirs_score)
            print(f"{shape:<10} {mode:<6} {baseline:<14} {o:>17.3f} {t:>17.3f} {t / o:>8.2f} {os_:>17.3f} {ts:>17.3f}")
            rows.append(dict(shape=shape, mode=mode, baseline=baseline, memaudit_model_s=o, baseline_model_s=t,
                             speedup=t / o, memaudit_score_s=os_, baseline_score_s=ts))
    print(json.dumps({"results": rows}))


if __name__ == "__main__":
    main()
