#!/bin/sh
# apt-install.sh NAME PKG...: installs the Debian packages of the list that
# are missing, with one apt-get update at most; idempotent (a second run
# installs nothing). NAME prefixes its messages. deps.sh, bench-deps.sh and
# soak-deps.sh name their lists and call this.
set -eu
name=$1
shift
missing=""
for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "$name: all packages present"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "$name: missing:$missing -- run as root or install sudo" >&2; exit 1
    fi
fi
echo "$name: installing$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
