#!/bin/sh
# make demo: start collectord in a temporary directory, run a leaking program
# under the agent, print the leak report, stop the collector.
set -eu
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
DIR=$(mktemp -d /tmp/stackwatch-demo.XXXXXX)
cleanup() { "$BUILD/collectord" stop --dir "$DIR/run" >/dev/null 2>&1 || true; rm -rf "$DIR"; }
trap cleanup EXIT INT TERM

echo "== collectord start --dir $DIR/run --expire 1"
"$BUILD/collectord" start --dir "$DIR/run" --expire 1
echo
echo "== LD_PRELOAD=$BUILD/libstackagent.so $BUILD/progs/demo 3"
STACKWATCH_DIR="$DIR/run" LD_PRELOAD="$BUILD/libstackagent.so" "$BUILD/progs/demo" 3
echo
echo "== stackctl query leaks --top 3"
"$BUILD/stackctl" --dir "$DIR/run" query leaks --top 3
echo
echo "== collectord stop"
"$BUILD/collectord" stop --dir "$DIR/run"
