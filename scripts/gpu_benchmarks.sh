#!/usr/bin/env bash
# The accelerator checks of one device session (device tool, H100/H200 image with jax + torch):
# SAE throughput + MFU (#5), the full NAR quality run (#3), intrinsic dimension / DSE at scale (#4).
# Usage from the repo root, with wheels for what the image lacks in .whl/ (see README):
#   bash scripts/gpu_benchmarks.sh OUTPUT_DIR
set -u
out=${1:?output directory}
mkdir -p "$out/results"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.5  # leave GPU memory to the PyTorch reference
export SAELENS_PYTHON=$(command -v python3) GEOMETRY_REFERENCE_BUDGET_S=120
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$out/gpu.txt"
part() {  # part SECONDS NAME: run one benchmark's full form with a time limit, log it
  local start=$SECONDS
  timeout "$1" python3 -m benchmarks --full --only "$2" --results-dir "$out/results" \
    > "$out/$2.log" 2>&1
  echo "$2 rc=$? $((SECONDS - start)) s" | tee -a "$out/gpu.txt"
}
part 90 interp_sae_throughput
part 250 nar_quality
part 200 geometry_device
