#!/bin/sh
# make demo: one command, stackctl run, on a leaking program (a private
# collectord for the run, the agent preloaded, the leak report at the end),
# then the same program as a CI gate (--fail-on leak: exit 23).
set -eu
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)

echo "== $BUILD/stackctl run --top 3 -- $BUILD/progs/demo 3"
"$BUILD/stackctl" run --top 3 -- "$BUILD/progs/demo" 3
echo
echo "== stackctl run --fail-on leak --top 1 -- progs/demo 2   (a CI gate)"
rc=0
"$BUILD/stackctl" run --fail-on leak --top 1 -- "$BUILD/progs/demo" 2 2>/dev/null || rc=$?
echo "exit status $rc (23: a leak was found)"
