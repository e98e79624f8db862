#!/bin/sh
# Instruction counts of bench's loop under the agent (exact mode), per commit:
# a measure that a shared, noisy machine does not move (wall time does).
#
#   bench/ir.sh [-n ITER] COMMIT...
#
# For each commit: a detached worktree (under $TMPDIR) builds that commit's
# agent and collectord; collectord runs in a temporary directory; the loop
# (this checkout's bench/workloads/loop.c, -O2, the same binary for every
# commit) runs ITER iterations per thread (default 100000) under callgrind
# with the agent preloaded, and once bare. Prints one line per commit:
# commit, date, instructions (Ir) under the agent, and the ratio to bare.
# callgrind runs the threads one at a time, so the flusher's work is counted
# but contention (two producers and the flusher on two cores) is not: a
# regression seen in wall time and not here lies in waits, not in work.
set -eu
ITER=100000
if [ "${1:-}" = "-n" ]; then ITER=$2; shift 2; fi
[ $# -ge 1 ] || { echo "usage: bench/ir.sh [-n ITER] COMMIT..." >&2; exit 2; }
command -v valgrind >/dev/null || { echo "bench/ir.sh: valgrind is needed (make bench-deps)" >&2; exit 2; }
TOP=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/swir.XXXXXX")
WT=$TMP/wt
cleanup() {
    [ -n "${CP:-}" ] && kill "$CP" 2>/dev/null || true
    git -C "$TOP" worktree remove --force "$WT" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
cc -std=gnu11 -O2 -g -o "$TMP/loop" "$TOP/bench/workloads/loop.c" -lpthread
ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
       awk '/Collected :/ {print $4}'; }
BARE=$(ir "$TMP/loop" "$ITER")
echo "bare: Ir=$BARE ($ITER iterations per thread)"
git -C "$TOP" worktree add --detach "$WT" HEAD >/dev/null 2>&1
for C in "$@"; do
    C=$(git -C "$TOP" rev-parse --verify "$C^{commit}")
    git -C "$WT" checkout -q --detach "$C"
    rm -rf "$WT/build"
    if ! make -C "$WT" -j2 build/libstackagent.so build/collectord >"$TMP/build.log" 2>&1; then
        echo "$C: build failed (see below)"; tail -5 "$TMP/build.log"; continue
    fi
    D=$TMP/run; rm -rf "$D"; mkdir -m 700 "$D"
    "$WT/build/collectord" start -f --dir "$D" --retain 20000 >"$TMP/collectord.log" 2>&1 &
    CP=$!
    i=0; while [ ! -S "$D/agent.sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    N=$(LD_PRELOAD=$WT/build/libstackagent.so STACKWATCH_DIR=$D ir "$TMP/loop" "$ITER")
    kill "$CP"; wait "$CP" 2>/dev/null || true; CP=
    printf '%s %s Ir=%s ratio=%s\n' "$(git -C "$WT" rev-parse --short HEAD)" \
        "$(git -C "$WT" log -1 --format=%cs)" "$N" "$(echo "scale=3; $N / $BARE" | bc)"
done
