#!/usr/bin/env bash
# A real Slurm, on this machine: start a single-node cluster (Debian's slurm-wlm and munge, a
# minimal slurm.conf, daemons started by hand, no systemd), run memaudit's emitted job array for
# the exact exposure walk with a throttle, and check that
#   1. the merged result equals the single-process `memaudit exposure`;
#   2. a failing task makes the array exit non-zero (`sbatch --wait`), the merge refuses the
#      folder naming the missing index, and resubmitting that task alone (`--array=3`)
#      finishes the job with the same result.
# Installs its packages with apt-get (root only; CI runs as root). Where installing is
# impossible it says why, loudly, and exits 0 without testing: that is a skip, not a pass.
#
# Usage: scripts/slurm_test.sh [path/to/memaudit]   (default target/release/memaudit)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/memaudit}")
start=$(date +%s)

skip() {
    echo "=================================================================" >&2
    echo "slurm_test: SKIPPED, NOT TESTED: $*" >&2
    echo "=================================================================" >&2
    exit 0
}

[ -x "$bin" ] || { echo "slurm_test: no memaudit binary at $bin (build it first)" >&2; exit 1; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || skip "slurm-wlm/munge are not installed and this is not root, so apt-get cannot install them"
    command -v apt-get >/dev/null || skip "no apt-get on this machine to install slurm-wlm and munge"
    echo "slurm_test: installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || skip "apt-get update failed (no package mirror reachable)"
    apt-get install -y -qq slurm-wlm munge >/dev/null || skip "apt-get install slurm-wlm munge failed"
fi
[ "$(id -u)" = 0 ] || skip "the daemons must start as root (slurmd runs jobs as their submitter)"

work=$(mktemp -d /tmp/memaudit-slurm.XXXXXX)
chmod 755 "$work"
conf=/etc/slurm/slurm.conf
saved_conf=""
cleanup() {
    set +e
    pkill -x slurmd; pkill -x slurmctld
    [ -n "${munge_started:-}" ] && pkill -x munged
    if [ -n "$saved_conf" ]; then mv "$saved_conf" "$conf"; else rm -f "$conf"; fi
    rm -rf "$work"
}
trap cleanup EXIT

# munge: the package created /etc/munge/munge.key; munged runs as user munge.
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
    munge_started=1
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ { print int($2 / 1024 * 0.8) }' /proc/meminfo)
mkdir -p /etc/slurm "$work/state" "$work/spool" "$work/logs"
if [ -e "$conf" ]; then saved_conf="$work/slurm.conf.saved"; cp "$conf" "$saved_conf"; fi
cat > "$conf" <<EOF
ClusterName=memaudit-test
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldLogFile=$work/logs/slurmctld.log
SlurmdLogFile=$work/logs/slurmd.log
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
ReturnToService=2
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
pkill -x slurmd || true; pkill -x slurmctld || true
slurmctld -i
slurmd
for _ in $(seq 60); do
    state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && break
    sleep 1
done
[ "$state" = idle ] || { echo "slurm_test: the node did not come up (state '$state')"; cat "$work"/logs/*.log; exit 1; }
echo "slurm_test: single-node Slurm up ($host, $cpus CPUs) after $(( $(date +%s) - start )) s"

# A small secret-sharer run (10^5 candidates) and its single-process exact exposure.
"$bin" --quiet --json secret-sharer --corpus embedded --canary "my pin is {digits:5}" --canaries 2 \
    --repetitions 1,8 --held-out 3 --rnn-hidden 16 --rnn-layers 1 --embed 8 --max-train 200 \
    --seq-len 40 --batch-size 16 --epochs 1 --extract-budget 0 --seed 7 --out "$work/run" > /dev/null
"$bin" --quiet --json exposure --run "$work/run" --exposure exact > "$work/single.json"

compare() { # merged.json: same ranks and exposures as single.json
    python3 - "$work/single.json" "$1" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ra = [(c["id"], c["rank"], c["exposure"]) for c in a["canaries"]]
rb = [(c["id"], c["rank"], c["exposure"]) for c in b["canaries"]]
assert ra == rb, f"merged {rb} != single-process {ra}"
print(f"slurm_test: merged ranks equal the single-process run ({len(ra)} canaries, {b['shards']} shards)")
PY
}

# 1. The emitted array (6 tasks, at most 2 at once) and its merge job.
"$bin" exposure --run "$work/run" --shards 6 --shard-dir "$work/shards" --emit slurm --throttle 2 \
    --cpus-per-task 1 --mem 1G --time 00:10:00
grep -q -- '--array=0-5%2' "$work/shards/array.sbatch"
mkdir -p "$work/shards/logs"
( cd "$work/shards" && bash submit.sh )
for _ in $(seq 600); do
    [ -s "$work/shards/merged.json" ] && break
    # nothing queued or running any more, and no result: the jobs failed
    squeue -h -o '%i' | grep -q . || { sleep 2; [ -s "$work/shards/merged.json" ] || break; }
    sleep 1
done
[ -s "$work/shards/merged.json" ] || { echo "slurm_test: no merged result"; tail -n 20 "$work"/shards/logs/*; exit 1; }
compare "$work/shards/merged.json"

# 2. A failing task: the array exits non-zero, the merge names the missing index, and
#    resubmitting that task alone finishes the job.
"$bin" exposure --run "$work/run" --shards 6 --shard-dir "$work/fail" --emit slurm --throttle 3 \
    --cpus-per-task 1 --mem 1G --time 00:10:00
mkdir -p "$work/fail/logs"
set +e
MEMAUDIT_ALLOW_FAULT_INJECTION=1 MEMAUDIT_TEST_FAIL_SHARD=3 sbatch --wait "$work/fail/array.sbatch" > /dev/null
rc=$?
set -e
[ "$rc" != 0 ] || { echo "slurm_test: the array with a failing task exited 0"; exit 1; }
echo "slurm_test: the array with a failing task exited $rc, as it must"
if "$bin" merge "$work/fail" 2> "$work/merge.err"; then
    echo "slurm_test: merge accepted a folder with a failed shard"; exit 1
fi
grep -q "indices 3" "$work/merge.err" || { cat "$work/merge.err"; exit 1; }
echo "slurm_test: merge refused: $(cat "$work/merge.err")"
sbatch --wait --array=3 "$work/fail/array.sbatch" > /dev/null
"$bin" --quiet --json merge "$work/fail" > "$work/fail-merged.json"
compare "$work/fail-merged.json"
echo "slurm_test: passed in $(( $(date +%s) - start )) s"
