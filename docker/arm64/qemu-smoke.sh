#!/usr/bin/env bash
# Run the aarch64 dependency set under user-mode emulation, without Docker:
# Debian's arm64 Python (bookworm: 3.11, the only arm64 CPython apt offers here;
# the image uses 3.12) + the manylinux aarch64 wheels of this package's
# dependencies, then `transcode` on a synthetic 2-second clip.
#
#   sudo docker/arm64/qemu-smoke.sh [WORKDIR]      (needs root for apt; ~2 min at 640x360,
#                                                   ~10 min at 1920x1080: WIDTH=1920 HEIGHT=1080)
#
# What it shows: av (FFmpeg + x264 with its aarch64 assembly), numpy, psutil,
# boto3 and the package import and run together as aarch64 code. What it does
# not: Python 3.12 (the av wheel is the same cp311-abi3 binary for 3.12; numpy's
# is a different build), Graviton timing (qemu is ~100x slower than native).
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/aarch64-smoke}
PYTHON=${PYTHON:-.venv/bin/python}
WIDTH=${WIDTH:-640}
HEIGHT=${HEIGHT:-360}
ROOT=$WORK/root
SITE=$WORK/site
mkdir -p "$WORK/debs" "$ROOT"

export DEBIAN_FRONTEND=noninteractive
dpkg --add-architecture arm64
apt-get update -qq
apt-get install -y -qq qemu-user-static >/dev/null
pkgs=(libc6 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib zlib1g libexpat1 libssl3 libffi8
      libbz2-1.0 liblzma5 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libuuid1 libnsl2 libtirpc3 libcrypt1
      libgcc-s1 libstdc++6 libdb5.3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2
      libkeyutils1 libzstd1)
(cd "$WORK/debs" && apt-get download -qq "${pkgs[@]/%/:arm64}" media-types)
for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done

# The package as a wheel (built from a copy: pip builds in-tree), then its
# dependencies as aarch64 wheels for Debian bookworm's glibc 2.36.
rm -rf "$WORK/src" "$WORK/wheel" "$SITE"
mkdir -p "$WORK/src"
cp -r setup.cfg pyproject.toml README.md transcoder worker "$WORK/src/"
"$PYTHON" -m pip wheel -q --no-deps -w "$WORK/wheel" "$WORK/src"
platforms=(--platform manylinux2014_aarch64)
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
"$PYTHON" -m pip install -q "${platforms[@]}" --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 --target "$SITE" "$WORK"/wheel/*.whl

run() { PYTHONPATH=$SITE qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11" "$@"; }
run -c 'import platform, av, numpy, psutil, boto3; print(platform.machine(), "av", av.__version__, "numpy", numpy.__version__)'
"$PYTHON" -m bench.sources "$WORK/clip.mp4" --seconds 2 --width "$WIDTH" --height "$HEIGHT"
rm -rf "$WORK/out"
time run -m transcoder "$WORK/clip.mp4" -o "$WORK/out" --quiet
test -s "$WORK/out/master.m3u8"
echo "qemu-smoke: OK: $WORK/out/master.m3u8"
