#!/bin/sh
# Installs what the benchmarks compare against (heaptrack, valgrind) and
# Debian's python3 with numpy for the numpy workload, only the missing
# packages, with one apt-get update at most. Idempotent: a second run
# installs nothing. bench/run.py skips a tool that is still missing.
set -eu
PKGS="heaptrack valgrind python3 python3-numpy"
exec sh "$(dirname "$0")/apt-install.sh" bench-deps $PKGS
