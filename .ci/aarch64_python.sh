#!/usr/bin/env bash
# Build an aarch64 (Raspberry Pi OS bookworm / 64-bit ARM) Python 3.11 with only the device's
# packages (numpy, tflite-runtime, grpcio, cryptography), run under qemu user-mode emulation on any x86-64 host.
#
#   [HOST_PYTHON=python3] .ci/aarch64_python.sh [OUT]     (default OUT: build/aarch64; HOST_PYTHON runs pip)
#
# Writes OUT/root (Debian bookworm arm64 python3.11 and its libraries, unpacked with dpkg-deb -x:
# no dpkg --add-architecture on the host, no binfmt_misc) and OUT/python, a launcher that execs
# qemu-aarch64-static with -0 "$0", so the emulated interpreter's sys.executable is the launcher
# and child processes started through it are emulated too. Needs root only to apt-get install
# qemu-user-static when it is missing. Idempotent: a finished OUT is reused.
set -euo pipefail
out=$(realpath -m "${1:-build/aarch64}")
root="$out/root"
stamp="$out/.complete"
wheels="numpy==1.25.2 tflite-runtime==2.14.0 grpcio==1.74.0 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wheels" ]; then echo "aarch64 python ready: $out/python"; exit 0; fi

if ! command -v qemu-aarch64-static >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
fi

rm -rf "$out"; mkdir -p "$root" "$out/apt/state/lists/partial" "$out/apt/cache/archives/partial" "$out/apt/etc"
: > "$out/apt/state/status"
cat > "$out/apt/etc/sources.list" <<SOURCES
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
SOURCES
cat > "$out/apt/apt.conf" <<CONF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
Dir::State "$out/apt/state";
Dir::State::status "$out/apt/state/status";
Dir::Cache "$out/apt/cache";
Dir::Etc::SourceList "$out/apt/etc/sources.list";
Dir::Etc::SourceParts "$out/apt/etc/none";
Acquire::Languages "none";
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
CONF
export APT_CONFIG="$out/apt/apt.conf"
apt-get update -qq
apt-get install -y -qq --download-only python3.11 libstdc++6 >/dev/null
for deb in "$out"/apt/cache/archives/*.deb; do dpkg-deb -x "$deb" "$root"; done
echo "aarch64 root: $(ls "$out"/apt/cache/archives/*.deb | wc -l) Debian packages"
rm -rf "$out/apt"

# The device's wheels, for aarch64 CPython 3.11 (tflite-runtime 2.14.0 exists only as manylinux_2_34_aarch64: glibc >= 2.34).
site="$root/usr/lib/python3/dist-packages"
mkdir -p "$site"
"${HOST_PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: --target "$site" \
  --python-version 3.11 --implementation cp --abi cp311 --abi abi3 \
  --platform manylinux_2_36_aarch64 --platform manylinux_2_34_aarch64 --platform manylinux_2_28_aarch64 \
  --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 $wheels

cat > "$out/python" <<LAUNCHER
#!/bin/sh
# aarch64 Python 3.11 under qemu user-mode emulation (made by .ci/aarch64_python.sh).
export QEMU_LD_PREFIX="$root"
exec qemu-aarch64-static -0 "\$0" "$root/usr/bin/python3.11" "\$@"
LAUNCHER
chmod +x "$out/python"
"$out/python" -c 'import platform, sys, numpy, tflite_runtime, grpc; print("aarch64 python ready:", sys.executable, platform.machine(), "numpy", numpy.__version__, "tflite-runtime", tflite_runtime.__version__, "grpcio", grpc.__version__)'
echo "$wheels" > "$stamp"
