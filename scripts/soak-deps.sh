#!/bin/sh
# Installs what `make soak` runs besides `make deps`: the programs of the
# compatibility run that are not needed by `make check` (redis-server and
# redis-benchmark), only the missing packages, with one apt-get update at
# most. Idempotent: a second run installs nothing.
set -eu
PKGS="redis-server redis-tools"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "soak-deps: all packages present"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "soak-deps: missing:$missing -- run as root or install sudo" >&2; exit 1
    fi
fi
echo "soak-deps: installing$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
