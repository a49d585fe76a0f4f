#!/usr/bin/env python3
"""Markdown tables from scripts/ptb_study.sh's output folder: exposure per repetition count and
epoch (interpolated mean over the canaries of a count, capped at log2(references); extrapolated
median in brackets), and the final audit (extraction success and cost) for each run.

usage: python3 scripts/ptb_study_table.py [OUT_DIR]   (default runs/ptb-study)
"""
import csv
import json
import math
import os
import statistics
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "runs/ptb-study"
runs = [r for r in ("plain", "dropout-wd", "dp-eps8", "dp-eps1") if os.path.isfile(os.path.join(out, r, "exposure.csv"))]


def fmt(x):
    return "inf" if x == math.inf else f"{x:.1f}"


for name in runs:
    rows = list(csv.DictReader(open(os.path.join(out, name, "exposure.csv"))))
    losses = {}
    mpath = os.path.join(out, name, "metrics.csv")
    if os.path.isfile(mpath):
        for m in csv.DictReader(open(mpath)):
            losses[int(m["epoch"])] = (m["train_loss"], m["valid_loss"], m.get("epsilon", ""))
    reps = sorted({int(r["repetitions"]) for r in rows})
    epochs = sorted({int(r["epoch"]) for r in rows})
    print(f"\n#### {name}\n")
    print("| epoch | train loss | valid loss | epsilon | " + " | ".join(f"x{r}" if r else "never inserted" for r in reps) + " |")
    print("|---" * (4 + len(reps)) + "|")
    for e in epochs:
        cells = []
        for r in reps:
            sel = [x for x in rows if int(x["epoch"]) == e and int(x["repetitions"]) == r]
            interp = statistics.mean(float(x["exposure_interpolated"]) for x in sel)
            extra = statistics.median(float(x["exposure_extrapolated"]) for x in sel)
            cells.append(f"{interp:.1f} ({fmt(extra)})")
        tl, vl, eps = losses.get(e, ("", "", ""))
        f = lambda v: f"{float(v):.3f}" if v not in ("", None) else "-"
        print(f"| {e} | {f(tl)} | {f(vl)} | {f(eps)} | " + " | ".join(cells) + " |")
    res_path = os.path.join(out, name + ".json")
    if not os.path.isfile(res_path):
        res_path = os.path.join(out, name, "secret_sharer.json")
    if os.path.isfile(res_path):
        try:
            d = json.load(open(res_path))
        except json.JSONDecodeError:
            continue
        if "by_repetitions" not in d:
            continue
        print(f"\nfinal audit ({name}): valid loss {d.get('valid_loss')}, epsilon {d.get('epsilon')}\n")
        print("| repetitions | canaries | interpolated (mean) | extrapolated (median) | extracted (top 10) | expansions |")
        print("|---|---|---|---|---|---|")
        for r in d["by_repetitions"]:
            ex = r["extrapolated_median"]
            ex = ex if isinstance(ex, str) else f"{ex:.1f}"
            print(f"| {r['repetitions']} | {r['canaries']} | {r['interpolated_mean']:.2f} | {ex} | {r['extracted']}/{r['canaries']} | {r['expansions_median']} |")
