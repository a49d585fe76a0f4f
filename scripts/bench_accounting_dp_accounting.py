#!/usr/bin/env python3
"""Compare memaudit's accountants with Google's dp_accounting on the same settings.

Runs `memaudit bench accounting --json`,
then times dp_accounting's RdpAccountant and PLDAccountant on each of its settings (a fresh
accountant, compose, get_epsilon; median over repeats) and prints, side by side, the epsilons and
the time ratios (dp_accounting time / memaudit time).

    pip install dp-accounting
    cargo build --release -p memaudit
    python3 scripts/bench_accounting_dp_accounting.py [--memaudit target/release/memaudit] [--repeats 5]

Exit codes: 0 all epsilons agree (RDP within 1e-6 relative and the same order, PLD within
max(0.5%, 1e-3)); 1 a disagreement (or, with --strict, a missed speed target); 3 dp_accounting is
not importable; 4 memaudit could not be run.

`--emit-extra-vectors` prints the extra reference values used by memaudit-accounting's tests
(tests/data/dp_accounting_extra.tsv) instead.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dp_accounting_version():
    try:
        from importlib.metadata import version

        return version("dp-accounting")
    except Exception:  # noqa: BLE001 - only for display
        return "?"


def import_dp_accounting():
    try:
        import dp_accounting  # noqa: F401
        from dp_accounting.pld import pld_privacy_accountant  # noqa: F401
        from dp_accounting.rdp import rdp_privacy_accountant  # noqa: F401
    except ImportError as exc:
        bar = "!" * 78
        sys.stderr.write(
            f"{bar}\n!! dp_accounting IS NOT INSTALLED: NOTHING WAS COMPARED.\n"
            f"!! ({exc})\n!! Install it with:  pip install dp-accounting\n{bar}\n"
        )
        sys.exit(3)
    import dp_accounting

    return dp_accounting


def run_memaudit(binary, repeats, quick, setting=None):
    extra = ["--json", "--repeats", str(repeats)] + (["--quick"] if quick else [])
    if setting is not None:
        extra += ["--setting", setting]
    last_err = ""
    for sub in (["bench", "accounting"],):
        cmd = [binary] + sub + extra
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            sys.stderr.write(f"error: cannot run {binary}: {exc}\n(build it with: cargo build --release -p memaudit)\n")
            sys.exit(4)
        if proc.returncode == 0:
            return json.loads(proc.stdout), " ".join(sub)
        last_err = proc.stdout.strip() or proc.stderr.strip()
    sys.stderr.write(f"error: memaudit bench accounting failed: {last_err}\n")
    sys.exit(4)


def dp_sgd_event(dpa, q, sigma, steps):
    step = dpa.GaussianDpEvent(sigma) if q == 1.0 else dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma))
    return dpa.SelfComposedDpEvent(step, steps)


def time_it(fn, repeats):
    """(value, median ms, min ms)."""
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return value, statistics.median(times), min(times)


def compare(args):
    dpa = import_dp_accounting()
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    # First the list of settings; then each setting is timed right before dp_accounting runs it, so
    # that both see the same machine load (load on a shared machine drifts).
    report, how = run_memaudit(args.memaudit, 1, args.quick)
    print(f"memaudit `{how}` ({report.get('threads')} threads) vs dp_accounting {dp_accounting_version()}, "
          f"median of {args.repeats} runs each, interleaved per setting; x = dp_accounting time / memaudit time\n")
    head = (f"{'setting':<17} {'rdp eps (memaudit/dp_acc)':>27} {'rel diff':>9} {'order':>7} "
            f"{'pld eps (memaudit/dp_acc)':>27} {'rel diff':>9} | {'rdp ms ma/dpa':>15} {'x':>6} | {'pld ms ma/dpa':>17} {'x':>6}")
    print(head)
    print("-" * len(head))
    agree = True
    rdp_ok = True
    speedups = []
    best_speedups = []
    for listed in report["settings"]:
        s = run_memaudit(args.memaudit, args.repeats, False, listed["name"])[0]["settings"][0]
        q, sigma, steps, delta = s["q"], s["noise_multiplier"], s["steps"], s["delta"]
        event = dp_sgd_event(dpa, q, sigma, steps)

        def rdp():
            acc = rdp_privacy_accountant.RdpAccountant()
            acc.compose(event)
            return acc.get_epsilon_and_optimal_order(delta)

        def pld():
            acc = pld_privacy_accountant.PLDAccountant()
            acc.compose(event)
            return acc.get_epsilon(delta)

        (r_eps, r_order), r_ms, _ = time_it(rdp, args.repeats)
        p_eps, p_ms, p_min = time_it(pld, args.repeats)
        m_r, m_p = float(s["rdp_epsilon"]), float(s["pld_epsilon"])
        r_rel = abs(m_r - r_eps) / r_eps if r_eps else abs(m_r)
        p_rel = abs(m_p - p_eps) / p_eps if p_eps else abs(m_p)
        same_order = float(s["rdp_order"]) == float(r_order)
        ok = r_rel <= 1e-6 and same_order and abs(m_p - p_eps) <= max(5e-3 * p_eps, 1e-3)
        agree &= ok
        rdp_ok &= float(s["rdp_ms_median"]) < 1.0
        r_x = r_ms / float(s["rdp_ms_median"])
        p_x = p_ms / float(s["pld_ms_median"])
        speedups.append(p_x)
        best_speedups.append(p_min / float(s["pld_ms_min"]))
        print(f"{s['name']:<17} {m_r:>13.6f}/{r_eps:<13.6f} {r_rel:>9.1e} {'same' if same_order else 'DIFF':>7} "
              f"{m_p:>13.6f}/{p_eps:<13.6f} {p_rel:>9.1e} | {float(s['rdp_ms_median']):>6.3f}/{r_ms:<8.2f} {r_x:>6.0f} | "
              f"{float(s['pld_ms_median']):>7.2f}/{p_ms:<9.1f} {p_x:>6.1f}" + ("" if ok else "   <-- DISAGREES"))
    print()
    print(f"epsilon agreement (RDP 1e-6 relative + same order; PLD max(0.5%, 1e-3)): {'yes' if agree else 'NO'}")
    print(f"RDP < 1 ms per epsilon: {'met' if rdp_ok else 'NOT met'}")
    print(f"PLD speed-up over dp_accounting (ratio of medians): min {min(speedups):.1f}x, "
          f"median {statistics.median(speedups):.1f}x (target >= 10x: {'met' if min(speedups) >= 10 else 'NOT met'})")
    print(f"PLD speed-up, ratio of best-of-{args.repeats} times (less sensitive to machine load): "
          f"min {min(best_speedups):.1f}x, median {statistics.median(best_speedups):.1f}x")
    if not agree:
        return 1
    if args.strict and (not rdp_ok or min(speedups) < 10):
        return 1
    return 0


def emit_extra_vectors():
    """Reference values for what accounting_vectors.tsv does not cover (tests/data)."""
    dpa = import_dp_accounting()
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    rel = dpa.NeighboringRelation
    print(f"# dp_accounting {dp_accounting_version()}: produced by "
          "scripts/bench_accounting_dp_accounting.py --emit-extra-vectors")
    print("# kind\tp1\tp2\tp3\tp4\tp5\tp6\tp7\tr1\tr2\tr3")
    # Sampling without replacement (replace-one RDP, WBK19): n, m, sigma, steps, delta -> eps, order.
    for n, m, sigma, steps, delta in [(60000, 256, 1.1, 14063, 1e-5), (1000, 10, 2.0, 500, 1e-6),
                                      (10000, 500, 0.8, 100, 1e-5), (100, 50, 3.0, 20, 1e-5),
                                      (50000, 100, 1.5, 300000, 1e-8), (1000, 1, 0.6, 1000, 1e-6)]:
        acc = rdp_privacy_accountant.RdpAccountant(neighboring_relation=rel.REPLACE_ONE)
        acc.compose(dpa.SelfComposedDpEvent(dpa.SampledWithoutReplacementDpEvent(n, m, dpa.GaussianDpEvent(sigma)), steps))
        eps, order = acc.get_epsilon_and_optimal_order(delta)
        print(f"wor_rdp\t{n}\t{m}\t{sigma!r}\t{steps}\t{delta!r}\t-\t-\t{float(eps)!r}\t{float(order)!r}\t-")
    # Delta from epsilon: q, sigma, steps, eps -> rdp delta, its order, pld delta.
    for q, sigma, steps, eps in [(256 / 60000, 1.1, 14063, 2.0), (0.01, 0.8, 1000, 3.0), (1.0, 2.0, 5, 1.0),
                                 (0.05, 1.3, 2000, 5.0), (0.001, 2.0, 10000, 0.3)]:
        event = dp_sgd_event(dpa, q, sigma, steps)
        r = rdp_privacy_accountant.RdpAccountant()
        r.compose(event)
        d, order = r.get_delta_and_optimal_order(eps)
        p = pld_privacy_accountant.PLDAccountant()
        p.compose(event)
        print(f"delta\t{q!r}\t{sigma!r}\t{steps}\t{eps!r}\t-\t-\t-\t{float(d)!r}\t{float(order)!r}\t{float(p.get_delta(eps))!r}")
    # Two different Poisson-sampled Gaussians composed: q1, s1, t1, q2, s2, t2, delta -> rdp eps, order, pld eps.
    for q1, s1, t1, q2, s2, t2, delta in [(0.01, 1.0, 1000, 0.001, 0.8, 5000, 1e-5),
                                          (0.004, 1.1, 3000, 1.0, 5.0, 3, 1e-6),
                                          (0.05, 2.0, 200, 0.02, 1.2, 400, 1e-7)]:
        event = dpa.ComposedDpEvent([dp_sgd_event(dpa, q1, s1, t1), dp_sgd_event(dpa, q2, s2, t2)])
        r = rdp_privacy_accountant.RdpAccountant()
        r.compose(event)
        eps, order = r.get_epsilon_and_optimal_order(delta)
        p = pld_privacy_accountant.PLDAccountant()
        p.compose(event)
        print(f"composed\t{q1!r}\t{s1!r}\t{t1}\t{q2!r}\t{s2!r}\t{t2}\t{delta!r}\t{float(eps)!r}\t{float(order)!r}\t{float(p.get_epsilon(delta))!r}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memaudit", default=os.path.join(REPO_ROOT, "target", "release", "memaudit"),
                        help="path to the memaudit binary (default: target/release/memaudit)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per setting (median)")
    parser.add_argument("--quick", action="store_true", help="first setting only")
    parser.add_argument("--strict", action="store_true", help="also exit 1 when a speed target is missed")
    parser.add_argument("--emit-extra-vectors", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.emit_extra_vectors:
        return emit_extra_vectors()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
