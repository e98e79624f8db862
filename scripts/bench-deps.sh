#!/bin/sh
# Installs what the benchmarks compare against (heaptrack, valgrind) and
# Debian's python3 with numpy for the numpy workload, only the missing
# packages, with one apt-get update at most. Idempotent: a second run
# installs nothing. bench/run.py skips a tool that is still missing.
set -eu
PKGS="heaptrack valgrind python3 python3-numpy"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "bench-deps: all packages present"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "bench-deps: missing:$missing -- run as root or install sudo" >&2; exit 1
    fi
fi
echo "bench-deps: installing$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
