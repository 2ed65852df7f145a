#!/usr/bin/env bash
# UFME-Ray's GPU path measured on one machine with an NVIDIA GPU and a package registry:
# onnxruntime-gpu installed into the checkout's .venv (scripts/install_gpu_runtime.sh: the [gpu]
# extra in place of onnxruntime), then images/s of the in-process chain on CPU and on CUDA, and of
# the service with its model stages on the GPU (serve_config.yaml + kuberay/components/gpu's
# serve overrides), side by side. The models and photos come from ../shared (UFME_SHARED_DIR).
#   scripts/device_check.sh [OUT_DIR]          default: bench-results/device-check
# Exits 3 when no GPU is visible, non-zero when a step fails or the CUDA run did not get CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "device_check: no NVIDIA GPU visible (nvidia-smi missing or lists none): nothing to measure" >&2
  exit 3
fi
out=${1:-bench-results/device-check}
shared=${UFME_SHARED_DIR:-../shared}
photos=$shared/faces/lfw
export UFME_MODEL_DIR=${UFME_MODEL_DIR:-$shared/models}
# The service's own data folder (admin key, gallery) and Ray temp folder: nothing of another run.
export UFME_DATA_DIR=$out/data UFME_RAY_TEMP_DIR=/tmp/ufme-ray-device-check
mkdir -p "$out"

# shellcheck source=/dev/null
. .venv/bin/activate
scripts/install_gpu_runtime.sh --editable
nvidia-smi

python scripts/bench_pipeline.py --in-process-only --photos "$photos" --providers CPUExecutionProvider \
  --out "$out/cpu.json"

python - "$out/serve_config.gpu.yaml" <<'PY'
import sys
from pathlib import Path

import yaml

from ufme_ray.k8s.render import apply_overrides, load_yaml_mapping

gpu = apply_overrides(load_yaml_mapping(Path("serve_config.yaml")),
                      load_yaml_mapping(Path("kuberay/components/gpu/serve-overrides.yaml")))
Path(sys.argv[1]).write_text(yaml.safe_dump(gpu, sort_keys=False))
PY
trap 'ufme-ray down || true' EXIT
ufme-ray up --serve-config "$out/serve_config.gpu.yaml"
ufme-ray demo --folder "$photos"
python scripts/bench_pipeline.py --photos "$photos" --providers CUDAExecutionProvider CPUExecutionProvider \
  --out "$out/gpu.json"

python - "$out" <<'PY'
import json
import sys
from pathlib import Path

import httpx

out = Path(sys.argv[1])
cpu, gpu = (json.loads((out / f"{name}.json").read_text()) for name in ("cpu", "gpu"))
base = cpu["in_process"]["images_per_s"]
rows = [("in-process, CPU", cpu["in_process"]), ("in-process, CUDA", gpu["in_process"])]
rows += [(f"service, GPU stages, c={row['concurrency']}", row) for row in gpu["http"]]
print(f"\n{'mode':<32}{'images/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs CPU':>8}")
for mode, row in rows:
    print(f"{mode:<32}{row['images_per_s']:>10.1f}{row['p50_ms']:>10.1f}{row['p99_ms']:>10.1f}"
          f"{row['images_per_s'] / base:>8.2f}")
print("\nin-process CUDA sessions got:", json.dumps(gpu["in_process"]["providers"]))
metrics = httpx.get("http://127.0.0.1:8080/metrics", timeout=10).text
print("service stage sessions got:")
print("\n".join(line for line in metrics.splitlines() if line.startswith("ray_ufme_stage_model_providers")))
missing = [model for models in gpu["in_process"]["providers"].values() for model, got in models.items()
           if got[0] != "CUDAExecutionProvider"]
sys.exit(f"device_check: not on CUDA: {missing}" if missing else None)
PY
