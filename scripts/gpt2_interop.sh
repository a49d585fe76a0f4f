#!/usr/bin/env bash
# memaudit <-> Hugging Face GPT-2 check (issue 21): makes a virtual environment with torch,
# transformers and safetensors from PyPI (the first time: minutes, torch is large), then either
# rewrites the transformers-made test fixtures or checks that GPT2LMHeadModel.from_pretrained
# loads memaudit's GPT-2 exports (tied and untied) with the logits memaudit computed.
#
# usage: scripts/gpt2_interop.sh             the export check
#        scripts/gpt2_interop.sh --fixture   rewrite crates/memaudit-engine/tests/data/gpt2_*
# env: VENV (default .venv-gpt2)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpt2}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c "import torch, transformers, safetensors" 2>/dev/null \
  || "$VENV/bin/pip" install --quiet torch transformers safetensors numpy
if [ "${1:-}" = "--fixture" ]; then
  exec "$VENV/bin/python" scripts/make_gpt2_fixture.py
fi
cargo build --release -p memaudit-engine --example gpt2_export_probe
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for tie in tied untied; do
  target/release/examples/gpt2_export_probe "$tmp/$tie" "$tie"
  "$VENV/bin/python" scripts/make_gpt2_fixture.py --check "$tmp/$tie"
done
