#!/bin/sh
# Installs what `make soak` runs besides `make deps`: the programs of the
# compatibility run that are not needed by `make check` (redis-server and
# redis-benchmark), only the missing packages, with one apt-get update at
# most. Idempotent: a second run installs nothing.
set -eu
PKGS="redis-server redis-tools"
exec sh "$(dirname "$0")/apt-install.sh" soak-deps $PKGS
