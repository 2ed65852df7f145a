#!/usr/bin/env bash
# Install UFME-Ray with onnxruntime-gpu (the [gpu] extra) in place of onnxruntime, into the
# environment of `python`. The Dockerfile's GPU build and scripts/device_check.sh use it.
#   scripts/install_gpu_runtime.sh [--editable] [PIP_OPTIONS...]     e.g. --no-cache-dir
# onnxruntime and onnxruntime-gpu both install the module `onnxruntime`, and pip installs both (the
# package requires onnxruntime; the extra adds onnxruntime-gpu with its CUDA and cuDNN wheels):
# whichever pip wrote last owns the files they share, and uninstalling one deletes files the other
# needs. So: install and check, remove onnxruntime, then rewrite onnxruntime-gpu's files (the same
# version, dependencies untouched). Afterwards `pip check` says onnxruntime is missing: expected, and
# a later plain `pip install .` brings the CPU wheel back over it (run this script again).
set -euo pipefail
cd "$(dirname "$0")/.."
editable=()
if [[ ${1:-} == --editable ]]; then
  editable=(-e)
  shift
fi
python -m pip install "$@" "${editable[@]}" '.[gpu]'
python -m pip check
python -m pip uninstall -y onnxruntime
version=$(python -c 'from importlib.metadata import version; print(version("onnxruntime-gpu"))')
python -m pip install "$@" --force-reinstall --no-deps "onnxruntime-gpu==$version"
python -c '
import sys, onnxruntime as ort
providers = ort.get_available_providers()
print("onnxruntime", ort.__version__, providers)
sys.exit(None if "CUDAExecutionProvider" in providers else "onnxruntime-gpu is not the onnxruntime module")
'
