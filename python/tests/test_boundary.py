"""The Python boundary: no Rust panic crosses, float64 C-contiguous arrays are borrowed (no
copy), other layouts are converted, long calls release the GIL, Ctrl-C interrupts an
experiment, and stubs cover the public API."""

import ast
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import memaudit
from memaudit import _native


def test_a_rust_panic_comes_back_as_runtime_error():
    with pytest.raises(RuntimeError, match="internal error in memaudit .*deliberate panic"):
        _native._raise_rust_panic()


def test_float64_c_contiguous_arrays_are_borrowed_not_copied():
    big = np.random.default_rng(0).normal(size=5_000_000)  # 40 MB
    assert _native.array_data_pointer(big) == big.ctypes.data
    # A contiguous 1-D slice of a bigger array is still borrowed (pointer into its buffer).
    assert _native.array_data_pointer(big[10:]) == big[10:].ctypes.data
    # Other dtypes and strides are converted once: a different buffer.
    assert _native.array_data_pointer(big[::2]) != big[::2].ctypes.data
    assert _native.array_data_pointer(big[:1000].astype(np.float32)) is not None


def test_long_calls_release_the_gil():
    scores = np.random.default_rng(1).normal(size=400_000)
    gaps, done = [], threading.Event()
    started = time.perf_counter()

    def work():
        memaudit.lower_bounds(scores + 1, scores, method="clopper-pearson")
        done.set()

    t = threading.Thread(target=work)
    t.start()
    last = time.perf_counter()
    while not done.is_set():
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        time.sleep(0.001)
    t.join()
    duration = time.perf_counter() - started
    # Held GIL: one gap as long as the call. Released: the main thread keeps running; allow
    # half the call's length for scheduling delays on a loaded machine.
    assert duration > 0.2, f"call too short to test ({duration:.3f} s)"
    assert max(gaps) < duration / 2, (max(gaps), duration)


def test_ctrl_c_interrupts_an_experiment(tmp_path):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "in.npy", rng.normal(1, 1, 100_000))
    np.save(tmp_path / "out.npy", rng.normal(0, 1, 100_000))
    config = {"experiment": "lower-bound", "in_scores": str(tmp_path / "in.npy"),
              "out_scores": str(tmp_path / "out.npy"), "method": "clopper-pearson"}
    # SIGINT from another thread as soon as the worker reports its first step (reading the
    # scores). The worker stops at its safe point (before the bounds) or, if it is past it,
    # when the bounds are computed (one unit, a fraction of a second for 2 x 100,000 scores);
    # either way the call raises KeyboardInterrupt only once the worker has ended.
    def progress(stage, done, total):
        if (stage, done) == ("read", 0):
            threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT)).start()

    # Python's own Ctrl-C handler, also where the suite runs as a background job (a
    # non-interactive shell starts those with SIGINT ignored, and Python keeps that).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            memaudit.run_experiment(config, progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert _native._running_experiment_threads() == 0
    # Bound: the 50 ms signal poll plus at most the bounds' computation (0.1 s here); 10 s is
    # generous for the loaded 2-core machine.
    assert time.perf_counter() - started < 10.0


def test_progress_callback_sees_every_stage(tmp_path):
    np.savetxt(tmp_path / "in.txt", np.arange(50.0) + 10)
    np.savetxt(tmp_path / "out.txt", np.arange(50.0))
    seen = []
    r = memaudit.run_experiment(
        {"experiment": "lower-bound", "in_scores": str(tmp_path / "in.txt"), "out_scores": str(tmp_path / "out.txt")},
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )
    assert r["experiment"] == "lower-bound" and r["m"] == 100
    assert seen[-1] == ("lower-bound", 1, 1) and ("read", 2, 2) in seen


def test_experiment_from_toml_with_relative_paths(tmp_path):
    np.savetxt(tmp_path / "in.txt", np.arange(50.0) + 10)
    np.savetxt(tmp_path / "out.txt", np.arange(50.0))
    (tmp_path / "audit.toml").write_text(
        'experiment = "lower-bound"\nin_scores = "in.txt"\nout_scores = "out.txt"\nmethod = "clopper-pearson"\nsignificance = 0.01\n'
    )
    r = memaudit.run_experiment(tmp_path / "audit.toml", progress=False)
    direct = memaudit.lower_bounds(np.arange(50.0) + 10, np.arange(50.0), method="clopper-pearson", significance=0.01)
    assert r["results"] == direct["results"]


def test_experiment_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="^config: unknown field `in_score`"):
        memaudit.run_experiment({"experiment": "lower-bound", "in_score": "a", "out_scores": "b"})
    with pytest.raises(ValueError, match='^config.experiment "trian": unknown experiment; use one of train, secret-sharer'):
        memaudit.run_experiment({"experiment": "trian"})
    # A setting the experiment needs is named by its key (checked before anything runs).
    with pytest.raises(ValueError, match='^config.run.out "": give the run folder'):
        memaudit.run_experiment({"experiment": "train"})
    with pytest.raises(FileNotFoundError, match="^config.in_scores: "):
        memaudit.run_experiment({"experiment": "lower-bound", "in_scores": str(tmp_path / "x"), "out_scores": "b"})
    with pytest.raises(FileNotFoundError, match="^config: "):
        memaudit.run_experiment(tmp_path / "missing.toml")
    with pytest.raises(TypeError, match="^config: expected a dict or a path"):
        memaudit.run_experiment(42)
    with pytest.raises(TypeError, match="^progress"):
        memaudit.run_experiment({"experiment": "mia", "scores": "x"}, progress=3)


def test_stubs_cover_the_native_module():
    stub = Path(memaudit.__file__).with_name("_native.pyi")
    tree = ast.parse(stub.read_text())
    declared = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    public = {n for n in dir(_native) if not n.startswith("__")}
    assert public <= declared | {"__version__"}, public - declared
    assert (stub.parent / "py.typed").exists()
    for name in memaudit.__all__:
        doc = getattr(memaudit, name).__doc__
        assert doc and len(doc) > 60, name
