"""run_experiment: any experiment of the library, and the audit pipeline, from a dict or a file
(tiny configs on the embedded data: each test runs in about a second), progress, Ctrl-C with
cooperative cancellation and the rerun that resumes, and config errors naming the key."""

import _thread
import json
import math
import os
import signal
import threading
import time

import pytest

import memaudit
from memaudit import _native

# A one-variant audit: data, train/plain (a 1x8 LSTM, 10 epochs of 5 steps on 150 windows of
# the embedded corpus), mia/plain (one shadow pair, LOSS), report. About 1.5 s on the shared
# 2-core machine.
AUDIT_TOML = """
experiment = "audit"
out = "audit-out"          # relative to this file
seed = 3
[data]
seq_len = 32
max_train = 150
[model]
hidden = 8
embed = 8
[training]
epochs = 10
batch_size = 32
[[variants]]
name = "plain"
[canaries]
template = "pin {digits:2}"
per_repetition = 1
repetitions = [1]
held_out = 2
[audits.extraction]
budget = 200
[audits.mia]
attacks = ["loss"]
shadow_pairs = 1
epochs = 1
[audits.lower_bounds]
white_box_canaries = 0
one_run_canaries = 0
"""

STAGES = ["data", "train/plain", "mia/plain", "report"]


def stage_status(result):
    return [(s["name"], s["status"]) for s in result["run"]["stages"]]


def test_every_experiment_is_named():
    names = memaudit.experiment_names()
    for n in ["train", "secret-sharer", "exposure", "extract", "dp-sweep", "mia", "lower-bound",
              "dynamics curves", "dynamics capacity", "dynamics regularizers",
              "dynamics easy-hard", "dynamics sensitivity", "dynamics csr", "attack lsb",
              "attack correlation", "attack sign", "attack capacity", "audit"]:
        assert n in names


def test_secret_sharer_from_a_dict_returns_its_typed_result(tmp_path):
    # Canaries "my pin is {digits:3}" inserted 1 and 8 times, a 1x16 LSTM, one epoch on 100
    # windows: the library's doc example, as a dict.
    r = memaudit.run_experiment({
        "experiment": "secret-sharer",
        "canary": {"template": "my pin is {digits:3}", "canaries": 1, "repetitions": [1, 8],
                   "held_out": 3},
        "model": {"rnn_hidden": 16, "rnn_layers": 1, "embed": 8},
        "data": {"max_train": 100, "seq_len": 40},
        "run": {"epochs": 1, "batch_size": 16, "seed": 7, "out": tmp_path / "run"},
        "exposure": {"references": 64},
        "extraction": {"extract_budget": 2000},
    }, progress=False)
    assert r["experiment"] == "secret-sharer"
    # One row per repetition count (0 = held out, 1, 8); |R| = 1000 candidates.
    assert [row["repetitions"] for row in r["by_repetitions"]] == [0, 1, 8]
    assert r["log2_space"] == pytest.approx(math.log2(1000), rel=1e-12)
    assert all(0.0 <= c["exposure"] <= r["log2_space"] for c in r["canaries"])
    # The CLI's --json object: what the run folder's run.json records as its results.
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "completed"


def test_train_from_a_dict(tmp_path):
    r = memaudit.run_experiment({
        "experiment": "train",
        "data": {"data": "digits", "max_train": 200},
        "model": {"hidden": [8]},
        "run": {"epochs": 2, "batch_size": 50, "seed": 1, "out": str(tmp_path / "run")},
    }, progress=False)
    assert (r["experiment"], r["epochs"], r["steps"], r["stop_reason"]) == ("train", 2, 8, "completed")
    assert r["model"]["hidden"] == [8] and r["private"] is False
    # Non-finite or absent numbers come back as Python values, not the CLI's strings.
    assert r["epsilon"] is None and isinstance(r["valid_loss"], float)


def test_audit_pipeline_from_a_toml_path_and_a_rerun_skips_every_stage(tmp_path):
    (tmp_path / "audit.toml").write_text(AUDIT_TOML)
    seen = set()
    first = memaudit.run_experiment(tmp_path / "audit.toml",
                                    progress=lambda stage, done, total: seen.add(stage))
    assert first["experiment"] == "audit" and first["schema_version"] == 2
    assert stage_status(first) == [(s, "ran") for s in STAGES]
    # `out` is relative to the file; results.json is the returned dict (less "experiment").
    out = tmp_path / "audit-out"
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["summary"] == first["summary"] and on_disk["variants"][0]["name"] == "plain"
    # The progress callback saw the stages' units: training steps, shadow models, scoring.
    assert {"train", "shadow models", "scoring"} <= seen
    again = memaudit.run_experiment(str(tmp_path / "audit.toml"), progress=False)
    assert stage_status(again) == [(s, "skipped") for s in STAGES]
    assert again["summary"] == first["summary"]


def test_ctrl_c_stops_a_pipeline_at_a_safe_point_and_the_rerun_resumes(tmp_path):
    (tmp_path / "audit.toml").write_text(AUDIT_TOML)
    training = threading.Event()
    interrupted_at = []

    def progress(stage, done, total):
        if stage == "train":
            training.set()

    def ctrl_c():
        # Ctrl-C once the training stage is under way (its first steps are reported).
        if training.wait(60):
            interrupted_at.append(time.perf_counter())
            _thread.interrupt_main()

    # Python's own Ctrl-C handler, also where the suite runs as a background job (a
    # non-interactive shell starts those with SIGINT ignored, and Python keeps that).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Thread(target=ctrl_c, daemon=True)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            memaudit.run_experiment(tmp_path / "audit.toml", progress=progress)
        raised_at = time.perf_counter()
    finally:
        signal.signal(signal.SIGINT, previous)
    timer.join(5)
    # Bound: the 50 ms signal poll plus the worker's way to its next safe point (the end of the
    # current training step, milliseconds here); 5 s is generous for the loaded 2-core machine.
    assert interrupted_at and raised_at - interrupted_at[0] < 5.0
    # The worker was joined before the exception was raised: no thread keeps running.
    assert _native._running_experiment_threads() == 0
    # Nothing half-written: the data stage is committed, the interrupted training stage left no
    # folder (its temporary unit was removed), and no report exists yet.
    out = tmp_path / "audit-out"
    assert sorted(os.listdir(out / "stages")) == ["data"]
    assert not (out / "results.json").exists()
    # The rerun reuses the finished stage and completes.
    r = memaudit.run_experiment(tmp_path / "audit.toml", progress=False)
    assert stage_status(r) == [("data", "skipped")] + [(s, "ran") for s in STAGES[1:]]
    assert (out / "results.json").is_file()


def test_ctrl_c_during_training_keeps_the_checkpoints_and_the_resumed_run_finishes(tmp_path):
    # 6 epochs of an MLP on 1500 of the built-in digits (47 steps each); Ctrl-C in epoch 2
    # (after the first epoch's checkpoint), then the same run with resume.
    config = {
        "experiment": "train",
        "data": {"data": "digits", "max_train": 1500},
        "model": {"hidden": [64]},
        "run": {"epochs": 6, "batch_size": 32, "seed": 1, "out": str(tmp_path / "run")},
    }
    state = {"sent": False}

    def progress(stage, done, total):
        # The first step of the second epoch: epoch 1's checkpoint is written.
        if stage == "train" and done > total // 6 and not state["sent"]:
            state["sent"] = True
            threading.Timer(0.0, _thread.interrupt_main).start()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            memaudit.run_experiment(config, progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints and not any(".tmp" in c for c in checkpoints), checkpoints
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "running"  # interrupted, resumable
    resumed = memaudit.run_experiment(dict(config, run=dict(config["run"], resume=True)), progress=False)
    assert (resumed["epochs"], resumed["stop_reason"]) == (6, "completed")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["resumed"] is True


def test_unknown_keys_and_bad_settings_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"^config.canary: unknown field `templat`"):
        memaudit.run_experiment({"experiment": "secret-sharer", "canary": {"templat": "x"}})
    with pytest.raises(ValueError, match=r"^config.run.epochs: invalid type: string \"two\""):
        memaudit.run_experiment({"experiment": "train", "run": {"epochs": "two"}})
    with pytest.raises(ValueError, match=r"^config.variants\[0\].dp.target_epsilon -1: "):
        memaudit.run_experiment({"experiment": "audit", "out": str(tmp_path / "a"),
                                 "variants": [{"name": "dp", "dp": {"target_epsilon": -1.0}}]})
    (tmp_path / "bad.toml").write_text(AUDIT_TOML.replace("[audits.mia]", "[audits.mia]\nshadow_pair = 1"))
    with pytest.raises(ValueError, match=r"^config.audits.mia: unknown field `shadow_pair`"):
        memaudit.run_experiment(tmp_path / "bad.toml")
    with pytest.raises(ValueError, match=r"^config.experiment: missing; name the experiment: train, "):
        memaudit.run_experiment({"run": {}})
    with pytest.raises(TypeError, match=r"^config: a value JSON cannot hold"):
        memaudit.run_experiment({"experiment": "train", "run": {"out": {1, 2}}})
    with pytest.raises(FileNotFoundError, match=r"^config.scores: "):
        memaudit.run_experiment({"experiment": "mia", "scores": str(tmp_path / "none.npz")})
