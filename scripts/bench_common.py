"""Shared by the comparison scripts: the benchmark shapes, mirrored from
crates/memaudit/src/cmd/bench_engine.rs, and a runner for `memaudit bench ... --json`."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

SHAPES = {
    "mlp": dict(kind="mlp", batch=256),
    "cnn": dict(kind="cnn", batch=256),
    "lstm": dict(kind="lstm", vocab=50, embed=32, hidden=200, layers=1, seq=20, batch=64),
    "char-lstm": dict(kind="lstm", vocab=60, embed=32, hidden=200, layers=2, seq=50, batch=64),
}


def memaudit_binary():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exe = os.path.join(root, "target", "release", "memaudit")
    if os.path.exists(exe):
        return exe
    found = shutil.which("memaudit")
    if found:
        return found
    sys.exit("error: build memaudit first: cargo build --release")


def memaudit_bench(what, shape, repeats):
    out = subprocess.run(
        [memaudit_binary(), "bench", what, "--shapes", shape, "--repeats", str(repeats), "--no-rss", "--json", "--quiet"],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["results"][0]


def require(module, install):
    try:
        return __import__(module)
    except ImportError:
        bar = "!" * 78
        sys.stderr.write(f"{bar}\nERROR: {module} is not installed, so NO comparison was made.\n"
                         f"Install it with: {install}\n{bar}\n")
        sys.exit(1)


def timed(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)
