#!/usr/bin/env bash
# The GPU bench on any machine with an NVIDIA GPU, CUDA 13 libraries and Python 3.11 (docs/gpu.md).
#
#   bench/gpu.sh [onnxruntime_gpu-1.31.1-....whl]
#   BENCH_ARGS="--sessions 2 --max-batch 8" bench/gpu.sh     # more `aimass bench` options
#   AIMASS_PY=python3 bench/gpu.sh       # a Python that already has aimass and onnxruntime-gpu (no .venv)
#
# Makes the virtualenv (make install), swaps its CPU onnxruntime for onnxruntime-gpu (from the wheel
# given, else from the package index), checks that ONNX Runtime really runs on the GPU, then runs the
# detector and scaling benches into bench/results/gpu. PROVIDERS=tensorrt,cuda bench/gpu.sh benches
# TensorRT first (onnxruntime-gpu only offers it where TensorRT's libraries are installed).
set -euo pipefail

ORT_GPU_VERSION=1.31.1
PROVIDERS="${PROVIDERS:-cuda}"
OUT="${OUT:-bench/results/gpu}"
WHEEL="${1:-}"

cd "$(dirname "$0")/.."
# AIMASS_PY: an interpreter whose packages you installed yourself (a host without the package index):
# steps 2 and 3 are skipped and it runs everything.
PY="${AIMASS_PY:-.venv/bin/python}"

die() { echo "bench/gpu.sh: $*" >&2; exit 1; }

# --- the GPU and its driver
command -v nvidia-smi >/dev/null \
  || die "nvidia-smi not found: this needs an NVIDIA GPU with its driver installed (R580 or newer for CUDA 13)."
nvidia-smi -L >/dev/null 2>&1 \
  || die "nvidia-smi cannot talk to the driver (run 'nvidia-smi' to see why); in a container, start it with --gpus."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# --- the virtualenv, with onnxruntime-gpu instead of onnxruntime
if [ -z "${AIMASS_PY:-}" ]; then
  [ -z "$WHEEL" ] || [ -f "$WHEEL" ] || die "wheel $WHEEL does not exist; give the path of an onnxruntime_gpu .whl, or no argument to install from the package index."
  command -v make >/dev/null || die "make not found: install it (apt-get install make); 'make install' creates .venv."
  # Python 3.11 where there is one (the version the lock was tested with); PYTHON=... overrides.
  PYTHON="${PYTHON:-$(command -v python3.11 || echo python3)}"
  make install PYTHON="$PYTHON"
  gpu_installed() { "$PY" -m pip show onnxruntime-gpu 2>/dev/null | grep -qx "Version: $ORT_GPU_VERSION"; }
  cpu_installed() { "$PY" -m pip show onnxruntime >/dev/null 2>&1; }
  if [ -n "$WHEEL" ] || cpu_installed || ! gpu_installed; then
    # Both packages install the same 'onnxruntime' module: remove both, so neither leaves files in the
    # other's place (make install puts the CPU one back whenever requirements.lock changes).
    "$PY" -m pip uninstall --quiet -y onnxruntime onnxruntime-gpu
    # The lock keeps onnxruntime-gpu's dependencies (numpy, protobuf, ...) at the tested versions.
    "$PY" -m pip install --quiet -c requirements.lock "${WHEEL:-onnxruntime-gpu==$ORT_GPU_VERSION}"
  fi
fi

# --- ONNX Runtime on the GPU: the provider is compiled in, and a session really gets it
"$PY" - "$PROVIDERS" <<'EOF'
import sys

import onnxruntime as ort

from aimass.settings import DetectorSettings
from aimass_detector.engine import Detector
from aimass_detector.model import choose_providers

wanted = sys.argv[1].split(",")
available = ort.get_available_providers()
print(f"onnxruntime {ort.__version__}: {', '.join(available)}")
if "CUDAExecutionProvider" not in available:
    sys.exit("CUDAExecutionProvider is not in the installed onnxruntime: the wheel given is not onnxruntime-gpu, "
             "or the CPU package overwrote it. Run '.venv/bin/python -m pip uninstall -y onnxruntime "
             "onnxruntime-gpu', then bench/gpu.sh again.")
# A listed provider can still fail to load its libraries, and ONNX Runtime then runs on the CPU.
det = Detector.from_folder(DetectorSettings().model_dir, providers=wanted)
if det.providers[0] != choose_providers(wanted)[0]:
    sys.exit(f"ONNX Runtime fell back to {det.providers[0]} (see its error above): the GPU libraries did not load. "
             "onnxruntime-gpu 1.31.1 needs libcudart.so.13, cuBLAS 13 and cuDNN 9 for CUDA 13 on the library "
             "path: check 'ldconfig -p | grep -E \"libcudart.so.13|libcublas.so.13|libcudnn.so.9\"' (docs/gpu.md).")
print(f"session on {', '.join(det.providers)}, IO binding {'on' if det.io_binding else 'off'}")
EOF

# --- the bench
mkdir -p "$OUT"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
"$PY" -m aimass.cli bench --providers "$PROVIDERS" --only detector,scaling --out "$OUT" ${BENCH_ARGS:-}
echo "results: $OUT/bench.json and $OUT/bench.png (docs/gpu.md says how to read them)"
