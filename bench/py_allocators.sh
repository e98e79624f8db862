#!/bin/sh
# Cost of STACKWATCH_PYTHON_ALLOCATORS=1 on a Python loop of small objects:
# the same script without the agent, with it, and with the allocator-domain
# hooks; each against a private collectord. Best of RUNS wall-clock times.
#   bench/py_allocators.sh [PYTHON] [N]
set -eu
cd "$(dirname "$0")/.."
PY=${1:-/usr/bin/python3}
N=${2:-300000}
RUNS=${RUNS:-3}
tmp=$(mktemp -d)
trap 'build/collectord stop --dir "$tmp/run" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
build/collectord start --dir "$tmp/run" --expire 60 >/dev/null
cat > "$tmp/loop.py" <<PYEOF
import time
t = time.perf_counter()
keep = []
for i in range($N):
    d = {"a": i, "b": (i, i + 1)}
    if i % 16 == 0:
        keep.append(d)
print("%.3f" % (time.perf_counter() - t))
PYEOF
best() {
    b=""
    for _ in $(seq "$RUNS"); do
        v=$("$@")
        if [ -z "$b" ] || [ "$(echo "$v < $b" | bc)" = 1 ]; then b=$v; fi
    done
    echo "$b"
}
base=$(best "$PY" "$tmp/loop.py")
agent=$(best env STACKWATCH_DIR="$tmp/run" LD_PRELOAD="$PWD/build/libstackagent.so" "$PY" "$tmp/loop.py")
hooks=$(best env STACKWATCH_DIR="$tmp/run" STACKWATCH_PYTHON_ALLOCATORS=1 \
    LD_PRELOAD="$PWD/build/libstackagent.so" "$PY" "$tmp/loop.py")
echo "python=$($PY -c 'import sys; print(sys.version.split()[0])') n=$N best of $RUNS (s):"
echo "  no agent            $base"
echo "  agent               $agent"
echo "  agent + allocators  $hooks"
