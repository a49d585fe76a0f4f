#!/usr/bin/env python3
"""memaudit's plain training step vs PyTorch's on the engine benchmark shapes (issue 2).

Both run with 2 threads, one fixed batch, the same models (PyTorch's fused nn.LSTM for the LMs).
A step is forward, loss, backward and an SGD update. Shapes are timed alternately, memaudit then
PyTorch, for several rounds; the table reports the median over rounds of each side's median step
time, and the ratio memaudit / PyTorch.

    cargo build --release && python3 scripts/bench_engine_torch.py [--rounds 3] [--repeats 30]
"""
import argparse
import statistics

from bench_common import SHAPES, memaudit_bench, require, timed

torch = require("torch", "pip install torch")
nn = torch.nn


def tutorial_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, stride=2), nn.ReLU(), nn.MaxPool2d(2, 1),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


class LstmLm(nn.Module):
    def __init__(self, vocab, embed, hidden, layers):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x):  # x: [T, B]
        h, _ = self.lstm(self.emb(x))
        return self.out(h)


def make(shape):
    s = SHAPES[shape]
    g = torch.Generator().manual_seed(1)
    if s["kind"] == "mlp":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        x, y = torch.rand(s["batch"], 784, generator=g), torch.randint(0, 10, (s["batch"],), generator=g)
        loss_of = lambda: nn.functional.cross_entropy(model(x), y)
    elif s["kind"] == "cnn":
        model = tutorial_cnn()
        x, y = torch.rand(s["batch"], 1, 28, 28, generator=g), torch.randint(0, 10, (s["batch"],), generator=g)
        loss_of = lambda: nn.functional.cross_entropy(model(x), y)
    else:
        model = LstmLm(s["vocab"], s["embed"], s["hidden"], s["layers"])
        x = torch.randint(0, s["vocab"], (s["seq"], s["batch"]), generator=g)
        y = torch.randint(0, s["vocab"], (s["seq"], s["batch"]), generator=g)
        loss_of = lambda: nn.functional.cross_entropy(model(x).reshape(-1, s["vocab"]), y.reshape(-1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_of().backward()
        opt.step()
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    a = ap.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians over {a.rounds} rounds of {a.repeats} steps")
    print(f"{'shape':<10} {'memaudit plain':>15} {'torch plain':>12} {'ratio':>7} {'memaudit dp/plain':>18}")
    for shape in a.shapes.split(","):
        step = make(shape)
        ours, theirs, dp = [], [], []
        for _ in range(a.rounds):
            r = memaudit_bench("engine", shape, a.repeats)
            ours.append(r["plain_ms"])
            dp.append(r["dp_over_plain"])
            theirs.append(timed(step, a.repeats))
        o, t = statistics.median(ours), statistics.median(theirs)
        print(f"{shape:<10} {o:>12.2f} ms {t:>9.2f} ms {o / t:>7.2f} {statistics.median(dp):>18.3f}")


if __name__ == "__main__":
    main()
