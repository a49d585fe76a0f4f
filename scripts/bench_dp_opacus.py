#!/usr/bin/env python3
"""memaudit's DP-SGD step vs Opacus 1.6's on the engine benchmark shapes (issue 5).

Opacus runs each shape in its usual modes: per-sample gradient hooks ("hooks") everywhere, and
ghost clipping ("ghost") where Opacus supports it; LSTMs use Opacus' DPLSTM (its fused nn.LSTM has
no per-sample rule). Clip 1.0, noise multiplier 1.1, fixed batches, 2 threads. Shapes are timed
alternately with memaudit's DP step (`memaudit bench dp`) for several rounds; medians.

    cargo build --release && python3 scripts/bench_dp_opacus.py [--rounds 3] [--repeats 20]
"""
import argparse
import statistics
import warnings

from bench_common import SHAPES, memaudit_bench, require, timed

torch = require("torch", "pip install torch")
opacus = require("opacus", "pip install opacus==1.6.0")
from opacus import PrivacyEngine  # noqa: E402
from opacus.layers import DPLSTM  # noqa: E402

from bench_engine_torch import tutorial_cnn  # noqa: E402

nn = torch.nn
warnings.filterwarnings("ignore")


class DpLstmLm(nn.Module):
    def __init__(self, vocab, embed, hidden, layers):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.lstm = DPLSTM(embed, hidden, layers, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):  # x: [B, T] (Opacus needs the batch first)
        h, _ = self.lstm(self.emb(x))
        return self.out(h)


def make(shape, mode):
    s = SHAPES[shape]
    g = torch.Generator().manual_seed(1)
    b = s["batch"]
    if s["kind"] == "mlp":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        x, y = torch.rand(b, 784, generator=g), torch.randint(0, 10, (b,), generator=g)
    elif s["kind"] == "cnn":
        model = tutorial_cnn()
        x, y = torch.rand(b, 1, 28, 28, generator=g), torch.randint(0, 10, (b,), generator=g)
    else:
        model = DpLstmLm(s["vocab"], s["embed"], s["hidden"], s["layers"])
        x = torch.randint(0, s["vocab"], (b, s["seq"]), generator=g)
        y = torch.randint(0, s["vocab"], (b, s["seq"]), generator=g)
    vocab = s.get("vocab")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=b)
    crit = nn.CrossEntropyLoss()
    pe = PrivacyEngine()
    if mode == "ghost":
        model, opt, crit, _ = pe.make_private(module=model, optimizer=opt, criterion=crit, data_loader=loader,
                                              noise_multiplier=1.1, max_grad_norm=1.0, poisson_sampling=False,
                                              grad_sample_mode="ghost")
    else:
        model, opt, _ = pe.make_private(module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.1,
                                       max_grad_norm=1.0, poisson_sampling=False, grad_sample_mode="hooks")

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = crit(out.reshape(-1, vocab), y.reshape(-1)) if vocab else crit(out, y)
        loss.backward()
        opt.step()
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    a = ap.parse_args()
    torch.set_num_threads(2)
    print(f"opacus {opacus.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"medians over {a.rounds} rounds of {a.repeats} steps")
    print(f"{'shape':<10} {'memaudit dp':>12} {'dp/plain':>9} {'opacus mode':>12} {'opacus dp':>11} {'opacus/memaudit':>16}")
    for shape in a.shapes.split(","):
        modes = ["hooks", "ghost"] if SHAPES[shape]["kind"] != "lstm" else ["hooks"]
        steps = {}
        for m in modes:
            try:
                steps[m] = make(shape, m)
            except Exception as e:  # a mode Opacus does not support for this model
                print(f"{shape:<10} opacus {m} mode unavailable: {e}")
        ours, ratio, theirs = [], [], {m: [] for m in steps}
        for _ in range(a.rounds):
            r = memaudit_bench("dp", shape, a.repeats)
            ours.append(r["dp_ms"])
            ratio.append(r["dp_over_plain"])
            for m, st in steps.items():
                theirs[m].append(timed(st, a.repeats))
        o = statistics.median(ours)
        for m in steps:
            t = statistics.median(theirs[m])
            print(f"{shape:<10} {o:>9.2f} ms {statistics.median(ratio):>9.3f} {m:>12} {t:>8.2f} ms {t / o:>16.2f}")


if __name__ == "__main__":
    main()
