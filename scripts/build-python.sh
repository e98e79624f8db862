#!/bin/sh
# Builds CPython MINOR (3.13, 3.14, ...) from Debian's source package into a
# cache outside the tree, for the multi-version Python tests. Reuses a build
# whose stamp names the same upstream version.
#
#   scripts/build-python.sh 3.13            build (or reuse) $CACHE/3.13
#   scripts/build-python.sh --path 3.13     print the interpreter's path if built
#
# CACHE is ${STACKWATCH_PY_CACHE:-$HOME/.cache/stackwatch/pythons}. The source
# comes from deb.debian.org through a private apt configuration under
# $CACHE/apt (the machine's /etc/apt is not touched): deb-src entries for
# trixie, forky and sid; the newest listed version whose files the mirror
# serves is used, and only its upstream tarball (no Debian patches).
#
# When the source is listed but not served, Debian's binary packages are
# unpacked instead (binary_fallback below).
#
# Exit status: 0 built (or unpacked) or reused; 2 neither source nor
# binaries could be fetched (no network, no such package: the caller reports
# a skip); 1 anything else (a build failure is a real failure).
set -eu

CACHE=${STACKWATCH_PY_CACHE:-$HOME/.cache/stackwatch/pythons}
MIRROR=${STACKWATCH_PY_MIRROR:-http://deb.debian.org/debian}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

if [ "${1:-}" = "--path" ]; then
    MINOR=${2:?usage: build-python.sh --path MINOR}
    exe="$CACHE/$MINOR/bin/python$MINOR"
    if [ -f "$CACHE/$MINOR/.stackwatch-built" ] && [ -x "$exe" ]; then
        echo "$exe"; exit 0
    fi
    exit 1
fi
MINOR=${1:?usage: build-python.sh MINOR (e.g. 3.13)}
case "$MINOR" in
    3.[0-9]|3.[0-9][0-9]) ;;
    *) echo "build-python: bad version '$MINOR' (want e.g. 3.13)" >&2; exit 1 ;;
esac
PKG="python$MINOR"
PREFIX="$CACHE/$MINOR"
STAMP="$PREFIX/.stackwatch-built"
APT="$CACHE/apt"

say() { echo "build-python[$MINOR]: $*"; }

# When the mirror lists the source package but does not serve its files
# (python3.14 in 2026: every pool file 404), Debian's binary packages of the
# same suites are the next best: python$MINOR with its standard library and
# headers, unpacked into $PREFIX with the C library they were built against
# (newer than the host's), the interpreter's ELF interpreter and run path
# pointed at that C library with patchelf. It is Debian's build, not ours:
# static libpython in the executable, no --enable-shared libpython used. The
# stamp says so.
binary_fallback() {
    command -v patchelf >/dev/null 2>&1 || { say "patchelf not installed (make deps)"; return 2; }
    BIN="$CACHE/apt-bin"
    mkdir -p "$BIN/lists/partial" "$BIN/sources" "$BIN/cache/archives/partial" "$BIN/debs"
    for suite in trixie forky sid; do echo "deb $MIRROR $suite main"; done \
        > "$BIN/sources/stackwatch-bin.list"
    set -- -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$BIN/sources" \
        -o Dir::State::Lists="$BIN/lists" -o Dir::Cache="$BIN/cache" \
        -o Dir::State::status=/dev/null -o APT::Sandbox::User=root \
        -o Acquire::Retries=2 -o Acquire::http::Timeout=30 -o APT::Architecture=amd64
    fresh=$(find "$BIN/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)
    if [ -z "$fresh" ]; then
        say "apt-get update (private binary lists in $BIN)"
        apt-get "$@" update >"$BIN/update.log" 2>&1 || {
            say "cannot reach the Debian archive (see $BIN/update.log)"; return 2; }
    fi
    v=$(apt-cache "$@" policy "python$MINOR-minimal" 2>/dev/null | sed -n 's/^ *Candidate: //p')
    if [ -z "$v" ] || [ "$v" = "(none)" ]; then
        say "no binary package python$MINOR-minimal either"; return 2
    fi
    pkgs="python$MINOR-minimal libpython$MINOR-minimal libpython$MINOR-stdlib libpython$MINOR
          libpython$MINOR-dev libc6 libffi8 libexpat1 zlib1g"
    rm -f "$BIN/debs"/*.deb
    (cd "$BIN/debs" && apt-get "$@" download $pkgs >"$BIN/download.log" 2>&1) || {
        say "binary packages not served either ($(grep -m1 '^E:' "$BIN/download.log"))"; return 2; }
    rm -rf "$PREFIX"
    mkdir -p "$PREFIX/bin"
    for d in "$BIN/debs"/*.deb; do dpkg-deb -x "$d" "$PREFIX" || return 1; done
    lib="$PREFIX/usr/lib/x86_64-linux-gnu"
    ld="$lib/ld-linux-x86-64.so.2"
    [ -e "$ld" ] || ld="$PREFIX/lib64/ld-linux-x86-64.so.2"
    exe="$PREFIX/usr/bin/python$MINOR"
    patchelf --set-interpreter "$ld" --force-rpath \
        --set-rpath "$lib:$PREFIX/lib/x86_64-linux-gnu" "$exe" || return 1
    ln -sf "../usr/bin/python$MINOR" "$PREFIX/bin/python$MINOR"
    "$PREFIX/bin/python$MINOR" -c 'import ctypes, threading, sysconfig, sys; print(sys.version)' \
        >/dev/null || { say "the unpacked interpreter does not run"; return 1; }
    libc=$(dpkg-deb -f "$BIN/debs"/libc6_*.deb Version)
    echo "${v%-*} (Debian binary packages $v with libc6 $libc; the source was not served)" \
        > "$STAMP"
    say "unpacked Debian's python$MINOR $v (libc6 $libc) into $PREFIX"
    return 0
}

if [ -f "$STAMP" ] && [ -x "$PREFIX/bin/python$MINOR" ]; then
    say "reusing $(cat "$STAMP") in $PREFIX"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || { say "apt-get not found: cannot fetch sources"; exit 2; }

mkdir -p "$APT/lists/partial" "$APT/sources" "$APT/cache/archives/partial" "$APT/src"
{
    for suite in trixie forky sid; do echo "deb-src $MIRROR $suite main"; done
} > "$APT/sources/stackwatch-src.list"
set -- -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$APT/sources" \
    -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" \
    -o APT::Sandbox::User=root -o Acquire::Retries=2 -o Acquire::http::Timeout=30

# Refresh the source lists once a day at most.
fresh=$(find "$APT/lists" -maxdepth 1 -name '*Sources*' -mmin -1440 2>/dev/null | head -n 1)
if [ -z "$fresh" ]; then
    say "apt-get update (private source lists in $APT)"
    if ! apt-get "$@" update >"$APT/update.log" 2>&1; then
        say "cannot reach the Debian archive (see $APT/update.log)"; exit 2
    fi
fi

versions=$(apt-cache "$@" showsrc "$PKG" 2>/dev/null | sed -n 's/^Version: //p' | sort -u -r -V)
if [ -z "$versions" ]; then
    say "no source package $PKG in trixie/forky/sid"; exit 2
fi

# The mirror does not always serve the newest listed version: take the
# newest one it does serve.
got=""
for v in $versions; do
    up=${v%-*}
    up=${up#*:}
    tarball=$(ls "$APT/src/${PKG}_${up}.orig.tar."* 2>/dev/null | grep -v '\.asc$' | head -n 1 || true)
    if [ -n "$tarball" ]; then got=$up; break; fi
    if (cd "$APT/src" && apt-get "$@" source --download-only "$PKG=$v" >"$APT/source.log" 2>&1); then
        tarball=$(ls "$APT/src/${PKG}_${up}.orig.tar."* 2>/dev/null | grep -v '\.asc$' | head -n 1 || true)
        if [ -n "$tarball" ]; then got=$up; break; fi
    fi
    say "$PKG=$v: not served ($(grep -m1 '^E:' "$APT/source.log" 2>/dev/null || echo no tarball))"
done
if [ -z "$got" ]; then
    say "no listed version of $PKG could be fetched as source"
    binary_fallback
    exit $?
fi
say "building CPython $got from $(basename "$tarball") into $PREFIX (-j$JOBS)"

work="$CACHE/build-$MINOR"
rm -rf "$work" "$PREFIX"
mkdir -p "$work"
tar -C "$work" -xf "$tarball"
srcdir=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n 1)
mkdir -p "$work/out"
start=$(date +%s)
(
    cd "$work/out"
    "$srcdir/configure" --prefix="$PREFIX" --enable-shared --without-ensurepip \
        --disable-test-modules LDFLAGS="-Wl,-rpath,$PREFIX/lib" >"$work/configure.log" 2>&1
    make -j"$JOBS" >"$work/make.log" 2>&1
    make altinstall >"$work/install.log" 2>&1
) || { say "build failed: see $work/*.log"; tail -n 20 "$work"/*.log >&2 || true; exit 1; }
"$PREFIX/bin/python$MINOR" -c 'import ctypes, sys; print(sys.version)' >/dev/null || {
    say "built interpreter cannot import ctypes (libffi-dev missing?)"; exit 1; }
echo "$got" > "$STAMP"
rm -rf "$work"
say "built CPython $got in $(( $(date +%s) - start )) s"
