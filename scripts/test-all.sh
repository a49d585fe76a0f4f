#!/usr/bin/env bash
# The repository's test command (README, .ci/run): the Rust workspace's tests, then the Python
# package (python/, docs/python.md) built as a wheel into a fresh virtual environment and its
# pytest suite, then the scheduler test (scripts/slurm_test.sh: a single-node Slurm). maturin, pytest and numpy come from PyPI; the wheel's build shares target/ with
# the workspace, so it compiles only pyo3, numpy and the bindings on top of what cargo test built.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)

cargo test --release --workspace --exclude memaudit-python
rust_done=$(date +%s)
echo "test-all: cargo test took $((rust_done - start)) s"

# Python >= 3.9 with venv/ensurepip. An abi3 wheel compiles against no Python headers, so
# python3-dev is not needed; python3-venv is, on Debian/Ubuntu, and is installed when missing.
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
    else
        echo "test-all: python3 with the venv module is required (apt-get install python3-venv)" >&2
        exit 1
    fi
fi
python3 -c 'import sys; assert sys.version_info >= (3, 9), sys.version'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check "maturin>=1.16,<2" pytest numpy
"$work/venv/bin/maturin" build --release --locked \
    --manifest-path python/Cargo.toml --interpreter "$py" --out "$work/wheels"
"$py" -m pip install --quiet --disable-pip-version-check "$work"/wheels/memaudit-*.whl
wheel_done=$(date +%s)
echo "test-all: venv, wheel and install took $((wheel_done - rust_done)) s"

# From the tests folder, so `import memaudit` is the installed wheel, not python/memaudit.
(cd python/tests && MEMAUDIT_BIN="$root/target/release/memaudit" "$work/venv/bin/pytest" -q)
end=$(date +%s)
echo "test-all: pytest took $((end - wheel_done)) s; Python part $((end - rust_done)) s; total $((end - start)) s"

# Scale-out on a real scheduler (docs/scale-out.md): a single-node Slurm (apt-get installs
# slurm-wlm and munge when missing; CI runs as root), the emitted array with a throttle, a failing
# task and its resubmission. Where installing is impossible it prints a loud SKIPPED banner.
bash scripts/slurm_test.sh "$root/target/release/memaudit"
echo "test-all: slurm test (install + run) took $(( $(date +%s) - end )) s; total $(( $(date +%s) - start )) s"
