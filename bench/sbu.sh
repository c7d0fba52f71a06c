#!/bin/bash
# Measure this machine's SBU: the LFS book's reference build, binutils pass 1
# (cross binutils, --disable-nls --enable-gprofng=no --disable-werror, make,
# make install), timed from unpack to install. Run on an idle machine.
# Usage: bench/sbu.sh [binutils tarball] (default: the newest binutils in cache/downloads;
# LFS 12.3 defines its SBU with binutils 2.44, earlier measurements here used 2.40)
set -euo pipefail
cd "$(dirname "$0")/.."
TARBALL=${1:-$(ls cache/downloads/binutils*.tar.xz | sort -V | tail -1)}
WORK=$(mktemp -d /tmp/dappdeps-sbu.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s%N)
tar -xf "$TARBALL" -C "$WORK"
src=$(ls -d "$WORK"/binutils-*)
mkdir "$WORK/build" && cd "$WORK/build"
"$src/configure" --prefix="$WORK/tools" --with-sysroot="$WORK/lfs" --target=x86_64-lfs-linux-gnu \
    --disable-nls --enable-gprofng=no --disable-werror > "$WORK/log" 2>&1
make -j"${JOBS:-2}" >> "$WORK/log" 2>&1
make install >> "$WORK/log" 2>&1
end=$(date +%s%N)
echo "1 SBU = $(( (end - start) / 1000000000 )) s (binutils pass 1, make -j${JOBS:-2}, $(nproc) cores)"
