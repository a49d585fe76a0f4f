#!/usr/bin/env bash
# memaudit <-> PyTorch interop check (issue 17): makes a virtual environment with torch, numpy
# and safetensors from PyPI (the first time: minutes, torch is large), builds memaudit, then runs
# scripts/pytorch_interop.py and writes its output to docs/pytorch-interop.txt.
#
# usage: scripts/pytorch_interop.sh             the check (output also in docs/pytorch-interop.txt)
#        scripts/pytorch_interop.sh --fixture   rewrite the PyTorch-made test fixtures instead
#                                               (crates/memaudit-engine/tests/data/pytorch_*)
# env: VENV (default .venv-interop), MEMAUDIT_DATA (MNIST cache for the CNN rows)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-interop}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import torch, numpy, safetensors" 2>/dev/null \
  || "$VENV/bin/pip" install --quiet torch numpy safetensors
if [ "${1:-}" = "--fixture" ]; then
  exec "$VENV/bin/python" scripts/make_pytorch_fixture.py
fi
cargo build --release -p memaudit
args=()
if [ -n "${MEMAUDIT_DATA:-}" ]; then args+=(--data-dir "$MEMAUDIT_DATA"); fi
"$VENV/bin/python" scripts/pytorch_interop.py "${args[@]}" | tee docs/pytorch-interop.txt
