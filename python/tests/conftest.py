"""Shared helpers of the Python suite: the repository root, the CLI binary (built by
`cargo test --release --workspace` / `cargo build --release`, which scripts/test-all.sh runs
first) and a JSON runner for it."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli_path() -> Path:
    return Path(os.environ.get("MEMAUDIT_BIN", REPO / "target" / "release" / "memaudit"))


@pytest.fixture(scope="session")
def cli():
    """Runs `memaudit ARGS --json` and returns the parsed object. The interop tests need the
    CLI: a missing binary is a failure (build it with `cargo build --release`), not a skip."""
    binary = cli_path()
    if not binary.exists():
        pytest.fail(f"{binary} not found: run `cargo build --release` (or set MEMAUDIT_BIN)")

    def run(*args):
        out = subprocess.run(
            [str(binary), *map(str, args), "--json", "--quiet"],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout)

    return run


def cli_number(v):
    """The CLI writes non-finite numbers as "inf"/"nan" strings."""
    if isinstance(v, str):
        return float(v)
    return v
