#!/usr/bin/env bash
# Installs the emulated Cortex-A72 board (see targets/board/__init__.py):
#   qemu-aarch64-static, the Multi-Arch: same arm64 libraries, an aarch64 python3.11
#   unpacked into a folder of its own (python3:arm64 is NEVER installed: it would
#   remove the host python3), and the aarch64 TVM runtime wheels (runtime only).
# Everything but the apt packages lives under $COMPILER_BOARD_DIR
# (default ~/.cache/embedded-cnn-compiler/board).  Idempotent: a finished install
# leaves a stamp file and the script returns at once when it is there.
set -euo pipefail
BOARD_DIR="${COMPILER_BOARD_DIR:-$HOME/.cache/embedded-cnn-compiler/board}"
TVM_VERSION="0.27.0.post1"
FFI_VERSION="0.1.14.post1"
STAMP="$BOARD_DIR/.installed-tvm-$TVM_VERSION-ffi-$FFI_VERSION"
if [ -f "$STAMP" ] && command -v qemu-aarch64-static >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
ARM_LIBS="libpython3.11-stdlib:arm64 zlib1g:arm64 libexpat1:arm64 libstdc++6:arm64"
need_apt=0
command -v qemu-aarch64-static >/dev/null 2>&1 || need_apt=1
command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || need_apt=1
for pkg in $ARM_LIBS; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt-get update -qq
    # Only Multi-Arch: same arm64 libraries; never python3:arm64.
    apt-get install -y -qq --no-install-recommends qemu-user-static g++-aarch64-linux-gnu \
        $ARM_LIBS >/dev/null
fi
mkdir -p "$BOARD_DIR"
tmp="$(mktemp -d "$BOARD_DIR/.install.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# The aarch64 interpreter, unpacked (not installed).
download() { (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root python3.11-minimal:arm64 >/dev/null); }
download || { apt-get update -qq && download; }
dpkg-deb -x "$tmp"/python3.11-minimal_*_arm64.deb "$tmp/py"
# aarch64 wheels with the host pip.
python3 -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --target "$tmp/site" \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
    "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$FFI_VERSION" \
    numpy ml_dtypes typing_extensions tornado psutil cloudpickle
# Runtime-only board: the compiler library is not needed there (155 MB instead of ~1 GB).
rm -f "$tmp/site/tvm/lib/libtvm_compiler.so"
rm -rf "$BOARD_DIR/py" "$BOARD_DIR/site"
mv "$tmp/py" "$BOARD_DIR/py"
mv "$tmp/site" "$BOARD_DIR/site"
rm -f "$BOARD_DIR"/.installed-*
touch "$STAMP"
echo "emulated Cortex-A72 board installed in $BOARD_DIR"
