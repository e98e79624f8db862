#!/bin/sh
# Installs the Debian packages stackwatch needs, only those missing, with one
# apt-get update at most. Idempotent: a second run installs nothing.
set -eu
PKGS="build-essential pkg-config libunwind-dev libprotobuf-c-dev protobuf-c-compiler
libev-dev libdw-dev libelf-dev libcmocka-dev python3 python3-numpy python3-numba python3-pytest python3.11-dev clang
libclang-rt-14-dev elfutils binutils zlib1g-dev golang-github-google-pprof-dev golang-go
chromium libffi-dev xz-utils prometheus man-db groff-base mandoc patchelf
git sqlite3 openssl perl make tar valgrind libevent-dev python3-ujson iproute2"
exec sh "$(dirname "$0")/apt-install.sh" deps $PKGS
