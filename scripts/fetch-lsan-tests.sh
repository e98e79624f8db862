#!/bin/sh
# Fetches LeakSanitizer's own lit tests (compiler-rt/test/lsan of LLVM 19.1.7)
# from Debian's source package llvm-toolchain-19 (the upstream tarball,
# 164 MB, checked against its SHA-256) into a cache outside the tree, and
# prints the directory of their TestCases. Nothing of them is kept in this
# repository: `make lsan-lit` runs them as they are published.
#
#   scripts/fetch-lsan-tests.sh          fetch (or reuse) and print the path
#
# CACHE is ${STACKWATCH_LLVM_CACHE:-$HOME/.cache/stackwatch/llvm}.
# Exit status: 0 with the path printed; 2 the archive could not be fetched.
set -eu

CACHE=${STACKWATCH_LLVM_CACHE:-$HOME/.cache/stackwatch/llvm}
MIRROR=${STACKWATCH_PY_MIRROR:-http://deb.debian.org/debian}
VER=19.1.7
URL="$MIRROR/pool/main/l/llvm-toolchain-19/llvm-toolchain-19_$VER.orig.tar.xz"
SHA=ae498f3bc58ae2d9f64ef5f0c035c4240152bf015a5b7738b15c22e93bdc97ce
TAR="$CACHE/llvm-toolchain-19_$VER.orig.tar.xz"
DIR="$CACHE/llvm-toolchain-19_$VER/compiler-rt/test/lsan/TestCases"

if [ -f "$CACHE/.lsan-tests-$VER-2" ] && [ -d "$DIR" ]; then
    echo "$DIR"
    exit 0
fi
mkdir -p "$CACHE"
if [ ! -f "$TAR" ] || [ "$(sha256sum "$TAR" | cut -c1-64)" != "$SHA" ]; then
    echo "fetch-lsan-tests: downloading $URL (164 MB)" >&2
    curl -sSfL --retry 2 -o "$TAR.part" "$URL" || {
        echo "fetch-lsan-tests: cannot fetch $URL" >&2; rm -f "$TAR.part"; exit 2; }
    got=$(sha256sum "$TAR.part" | cut -c1-64)
    if [ "$got" != "$SHA" ]; then
        echo "fetch-lsan-tests: $URL: SHA-256 $got, expected $SHA" >&2
        rm -f "$TAR.part"
        exit 2
    fi
    mv "$TAR.part" "$TAR"
fi
echo "fetch-lsan-tests: extracting compiler-rt/test/lsan and sanitizer_common/print_address.h" >&2
tar -C "$CACHE" -xJf "$TAR" --wildcards '*/compiler-rt/test/lsan/*' \
    '*/compiler-rt/test/sanitizer_common/print_address.h'
touch "$CACHE/.lsan-tests-$VER-2"
echo "$DIR"
