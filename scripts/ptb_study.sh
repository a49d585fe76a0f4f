#!/usr/bin/env bash
# The Secret Sharer on PTB (reduced scale): a 2-layer 200-unit character LSTM with 9-digit
# canaries inserted 1, 4, 16 and 64 times, trained plainly, with dropout and weight decay, and
# with DP-SGD at epsilon 8 and 1 (Poisson sampling). Exposure is tracked after every epoch.
#
# Scale (set by the 2-core budget, see docs/secret-sharer.md): the first MAX_TRAIN windows of
# 100 characters of PTB's training text (5000 -> 0.5M characters, about a tenth of PTB), EPOCHS
# epochs each. Needs the fetched PTB: MEMAUDIT_DATA=/path/to/cache (memaudit data fetch ptb).
#
# usage: scripts/ptb_study.sh [OUT_DIR]   (env: MAX_TRAIN, EPOCHS, MEMAUDIT=path/to/binary)
set -euo pipefail
OUT=${1:-runs/ptb-study}
MAX_TRAIN=${MAX_TRAIN:-5000}
EPOCHS=${EPOCHS:-10}
BIN=${MEMAUDIT:-target/release/memaudit}
mkdir -p "$OUT"
common=(--corpus ptb --level char --canary "the random number is {digits:9}" --canaries 4
  --repetitions 1,4,16,64 --held-out 50 --references 8192 --extract-budget 20000
  --model lstm --rnn-hidden 200 --rnn-layers 2 --seq-len 100 --max-train "$MAX_TRAIN"
  --batch-size 32 --optimizer adam --lr 0.003 --epochs "$EPOCHS" --seed 7 --force --json)
run() {
  local name=$1; shift
  echo "== $name: $*" >&2
  /usr/bin/time -f "$name: %e s wall" "$BIN" secret-sharer "${common[@]}" --out "$OUT/$name" "$@" \
    >"$OUT/$name.json" 2>"$OUT/$name.log"
  tail -1 "$OUT/$name.log" >&2
}
run plain
run dropout-wd --dropout 0.3 --weight-decay 0.0001
run dp-eps8 --target-epsilon 8 --clip 1.0
run dp-eps1 --target-epsilon 1 --clip 1.0
