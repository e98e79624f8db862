#!/bin/sh
# Installs the Debian packages stackwatch needs, only those missing, with one
# apt-get update at most. Idempotent: a second run installs nothing.
set -eu
PKGS="build-essential pkg-config libunwind-dev libprotobuf-c-dev protobuf-c-compiler
libev-dev libdw-dev libelf-dev libcmocka-dev python3 python3-numpy python3-pytest python3.11-dev clang
libclang-rt-14-dev elfutils binutils zlib1g-dev golang-github-google-pprof-dev golang-go
chromium libffi-dev xz-utils prometheus man-db groff-base mandoc patchelf
git sqlite3 openssl perl make tar valgrind"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "deps: all packages present"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "deps: missing:$missing -- run as root or install sudo" >&2; exit 1
    fi
fi
echo "deps: installing$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
