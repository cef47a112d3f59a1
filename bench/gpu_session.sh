#!/usr/bin/env bash
# Everything that needs a GPU, in one call on a lent machine (no network there):
# build for sm_90, run the op tests on CUDA, the four compute-sanitizer tools, and
# the kernel benchmark against cuDNN. Logs go to $OUT (default /tmp/convkit-gpu);
# copy them into bench/results/ afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/convkit-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CONVKIT_CUDA=ON CUDAARCHS=${CUDAARCHS:-90}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
python -m pip install -q --no-build-isolation -e . > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
python -c "import convkit; print(convkit.cuda_status())" | tee "$OUT/status.txt"

timeout 240 pytest -q -p no:cacheprovider python_tests > "$OUT/pytest-gpu.log" 2>&1
echo "pytest rc=$? ($(tail -1 "$OUT/pytest-gpu.log"))"

for tool in memcheck racecheck initcheck synccheck; do
  timeout 120 compute-sanitizer --tool "$tool" --error-exitcode 9 python bench/sanitize_ops.py \
    > "$OUT/sanitizer-$tool.log" 2>&1
  echo "compute-sanitizer $tool rc=$? ($(grep -E 'ERROR SUMMARY|match' "$OUT/sanitizer-$tool.log" | tail -1))"
done

timeout 240 python bench/run_kernels.py --device cuda --min-time 0.05 --out "$OUT/kernels-cuda.json" \
  > "$OUT/kernels-cuda.txt" 2>&1
echo "benchmark rc=$?"
tail -12 "$OUT/kernels-cuda.txt"
