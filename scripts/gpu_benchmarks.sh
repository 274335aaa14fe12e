#!/usr/bin/env bash
# The accelerator checks of one device session (device tool, H100/H200 image with jax + torch).
# Usage from the repo root, with wheels for what the image lacks in .whl/ (see README):
#   bash scripts/gpu_benchmarks.sh OUTPUT_DIR [SECONDS:BENCHMARK ...]
# Each benchmark's full form runs under its time limit; after each one, the tables and logs so
# far are packed into OUTPUT_DIR/results.tgz (one file: the device tool returns few files).
set -u
out=${1:?output directory}; shift
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(90:interp_sae_throughput 250:nar_quality 200:geometry_device)
work=$(mktemp -d)
mkdir -p "$out" "$work/results" "$work/logs"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.5  # leave GPU memory to the PyTorch reference
export SAELENS_PYTHON=$(command -v python3) GEOMETRY_REFERENCE_BUDGET_S=120
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$work/logs/gpu.txt"
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$work/logs/gpu.txt"
for part in "${parts[@]}"; do
  seconds=${part%%:*} name=${part#*:} start=$SECONDS
  timeout "$seconds" python3 -m benchmarks --full --only "$name" --results-dir "$work/results" \
    > "$work/logs/$name.log" 2>&1
  echo "$name rc=$? $((SECONDS - start)) s" | tee -a "$work/logs/gpu.txt"
  tar czf "$out/results.tgz" -C "$work" results logs
done
