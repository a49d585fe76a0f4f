#!/usr/bin/env python3
"""Per-call overhead of the memaudit Python package against the same library calls made
in-process from Rust (python/bench), on the accounting, lower-bound and exposure functions;
and a check that a large float64 C-contiguous array is borrowed, not copied.

Usage (in an environment where the memaudit wheel is installed):
    CARGO_TARGET_DIR=target cargo build --release --manifest-path python/bench/Cargo.toml
    python scripts/bench_python_overhead.py [--rounds 7] [--calls 200]

Both sides time the same inputs (the fastest of ROUNDS rounds of CALLS calls each: on a shared
machine the minimum depends least on the load); the overhead is
Python's time minus Rust's, in microseconds per call. It covers argument parsing, array
borrowing, releasing and re-taking the GIL and building the result dict.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np

import memaudit
from memaudit import _native

ROOT = Path(__file__).resolve().parents[1]


def normals(n, shift):
    inv = NormalDist().inv_cdf
    return np.array([inv((i + 0.5) / n) + shift for i in range(n)])


def time_us(rounds, calls, f):
    per_call = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            f()
        per_call.append((time.perf_counter() - t) * 1e6 / calls)
    return min(per_call)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rust-bench", default=str(ROOT / "target" / "release" / "memaudit-python-bench"))
    args = ap.parse_args()

    rust = json.loads(
        subprocess.run([args.rust_bench, str(args.rounds), str(args.calls)], check=True,
                       capture_output=True, text=True).stdout
    )
    ins, outs, secrets = normals(1000, 1.0), normals(1000, 0.0), normals(10, -3.0)
    small_in, small_out = normals(20, 1.0), normals(20, 0.0)
    py = {
        "epsilon_rdp_us": time_us(args.rounds, args.calls, lambda: memaudit.epsilon(
            1e-5, noise_multiplier=1.1, sampling_rate=0.01, steps=1000, accountant="rdp")),
        "epsilon_rdp_one_order_us": time_us(args.rounds, args.calls, lambda: memaudit.epsilon(
            1e-5, noise_multiplier=1.1, sampling_rate=0.01, steps=1000, accountant="rdp", orders=[8.0])),
        "lower_bound_clopper_pearson_us": time_us(args.rounds, args.calls, lambda: memaudit.lower_bounds(
            ins, outs, method="clopper-pearson")),
        "lower_bound_clopper_pearson_20_us": time_us(args.rounds, args.calls, lambda: memaudit.lower_bounds(
            small_in, small_out, method="clopper-pearson")),
        "interpolation_exposure_us": time_us(args.rounds, args.calls, lambda: memaudit.interpolation_exposure(
            secrets, outs)),
    }
    print(f"{args.rounds} rounds x {args.calls} calls, fastest round, microseconds per call")
    print(f"{'call':34} {'rust':>10} {'python':>10} {'overhead':>10}")
    for key in py:
        print(f"{key[:-3]:34} {rust[key]:10.1f} {py[key]:10.1f} {py[key] - rust[key]:10.1f}")

    # No copy: 10 million float64 (80 MB), C-contiguous.
    big = np.random.default_rng(0).normal(size=10_000_000)
    borrowed = _native.array_data_pointer(big) == big.ctypes.data
    t_borrow = time_us(3, 20, lambda: _native.array_data_pointer(big))
    as_f32 = big.astype(np.float32)
    t_convert = time_us(3, 3, lambda: _native.array_data_pointer(as_f32))
    print(f"80 MB float64 C-contiguous array: borrowed (same data pointer) = {borrowed}; "
          f"{t_borrow:.1f} us to hand it over, vs {t_convert:.0f} us for the float32 copy's conversion")
    if not borrowed:
        sys.exit("the float64 C-contiguous array was copied")


if __name__ == "__main__":
    main()
