#!/bin/sh
# Instructions per decode of bench/workloads/pysmall_loop.py (CPython's small
# objects) under callgrind: bare, the agent's default (small objects sampled),
# STACKWATCH_PYTHON_ALLOCATORS=0 and =exact. Each variant runs at N1 and N2
# decodes; (Ir(N2) - Ir(N1)) / (N2 - N1) leaves start-up and exit out. A
# measure a noisy shared machine does not move.
#   bench/pysmall_ir.sh [N1 N2]
set -eu
N1=${1:-20000}
N2=${2:-60000}
TOP=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$TOP/build}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/swpyir.XXXXXX")
trap '"$B/collectord" stop --dir "$TMP/run" >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT INT TERM
"$B/collectord" start --dir "$TMP/run" --expire 10 >/dev/null
ir() { # variant n
    v=$1
    n=$2
    agent="LD_PRELOAD=$B/libstackagent.so STACKWATCH_DIR=$TMP/run"
    case $v in
    bare) agent= ;;
    off) agent="$agent STACKWATCH_PYTHON_ALLOCATORS=0" ;;
    exact) agent="$agent STACKWATCH_PYTHON_ALLOCATORS=exact" ;;
    esac
    # shellcheck disable=SC2086
    env $agent PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file="$TMP/cg" /usr/bin/python3 \
        "$TOP/bench/workloads/pysmall_loop.py" "$n" 2>&1 >/dev/null |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p' | tail -1
}
echo "pysmall_loop.py under callgrind: instructions per decode ((Ir($N2) - Ir($N1)) / $((N2 - N1)))"
for v in bare default off exact; do
    a=$(ir $v "$N1")
    b=$(ir $v "$N2")
    echo "$v $a $b" | awk -v d=$((N2 - N1)) '{ printf "%-8s %10.0f\n", $1, ($3 - $2) / d }'
done
