#!/usr/bin/env bash
# Everything that needs a GPU, in one call on a machine with no network: build for sm_90, run the op
# tests (the `device` fixture adds CUDA), the four compute-sanitizer tools over bench/sanitize_ops.py,
# the kernel benchmark against cuDNN, then the memory, training and time-to-accuracy benchmarks.
# Each step gets what is left of the time budget, in that order of priority; STEPS picks a subset
# (a warm machine keeps the install, so a second call can run STEPS="training tta").
# Real MNIST travels as .data/mnist.npz (11 MB, ignored by git; carry ".data"), made here with
#   python -c "import numpy as np; from convkit.datasets import mnist; (a, b), (c, d) = mnist.load_data();
#              np.savez_compressed('.data/mnist.npz', x_train=a, y_train=b, x_test=c, y_test=d)"
# Logs and results are packed into $OUT/gpu-session.tar.gz (the device returns few files); unpack
# them into bench/results/ afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DEST=${OUT:-/tmp}
OUT=$(mktemp -d /tmp/convkit-gpu.XXXX)
pack() { tar czf "$DEST/gpu-session.tar.gz" -C "$OUT" . && echo "packed $(ls "$OUT" | wc -l) files into $DEST/gpu-session.tar.gz"; }
trap pack EXIT
export PYTHONUNBUFFERED=1 CONVKIT_CUDA=ON CUDAARCHS=${CUDAARCHS:-90}
[ -f "$REPO/.data/mnist.npz" ] && export CONVKIT_DATA="$REPO/.data"
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-530}  # seconds for the whole script
STEPS=${STEPS-"build tests sanitizers kernels memory training tta"}
START=$SECONDS
left() { echo $((BUDGET - (SECONDS - START))); }
cap() { local l; l=$(left); l=$((l - ${2:-0})); echo $((l < $1 ? (l < 5 ? 5 : l) : $1)); }
want() { [[ " $STEPS " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
echo "gpu: $(tail -1 "$OUT/gpu.txt")"

# CIFAR-10 is on no registry: look for a copy the machine's frameworks may have cached.
timeout 20 find / -xdev -maxdepth 7 \( -iname "cifar-10*" -o -iname "cifar10*" \) -not -name "*.py" \
  -not -path "$REPO/*" -not -path "/tmp/*" -not -path "/proc/*" 2>/dev/null | head -20 > "$OUT/cifar-search.txt"
echo "CIFAR-10 candidates found: $(wc -l < "$OUT/cifar-search.txt") (cifar-search.txt)"

# Non-editable install; every Python step below runs outside the source tree so
# the installed package (with its compiled modules) is the one imported.
if want build; then
timeout "$(cap 240 250)" "$PY" -m pip install -v --no-build-isolation \
  -C cmake.define.CMAKE_CUDA_ARCHITECTURES="$CUDAARCHS" \
  -C cmake.define.CMAKE_CUDA_FLAGS="-Xptxas=-v" . > "$OUT/build.log" 2>&1
rc=$?
echo "build rc=$rc ($((SECONDS - START)) s)"
if [ $rc -ne 0 ]; then tail -40 "$OUT/build.log"; exit 1; fi
grep -E "ptxas" "$OUT/build.log" > "$OUT/ptxas.txt" || true
grep -E "warning" "$OUT/build.log" | head -5
fi
(cd /tmp && "$PY" -c "import convkit, convkit._cuda as c; print(convkit.cuda_status()); print(c.device_info())") \
  | tee "$OUT/status.txt"
while read -r found; do  # does a candidate hold the official data? (the loader checks the digests)
  (cd /tmp && timeout 60 "$PY" -c "import sys; from convkit.datasets import cifar10; (x, y), _ = cifar10.load_data(path=sys.argv[1]); print('verified CIFAR-10', x.shape, sys.argv[1])" "$found") 2>&1 | tail -1
done < "$OUT/cifar-search.txt" | tee "$OUT/cifar-load.txt"

if want tests; then
XDIST=""
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 8"
(cd /tmp && timeout "$(cap 200 200)" "$PY" -m pytest -q -p no:cacheprovider $XDIST --rootdir "$REPO" \
  -c "$REPO/pyproject.toml" "$REPO/python_tests") > "$OUT/pytest-gpu.log" 2>&1
echo "pytest rc=$? ($(tail -1 "$OUT/pytest-gpu.log")) ($((SECONDS - START)) s)"
grep -E "^(FAILED|ERROR)" "$OUT/pytest-gpu.log" | head -15
fi

if want sanitizers; then
for tool in memcheck racecheck initcheck synccheck; do
  (cd /tmp && timeout "$(cap 70 120)" compute-sanitizer --tool "$tool" --error-exitcode 9 \
    "$PY" "$REPO/bench/sanitize_ops.py") > "$OUT/sanitizer-$tool.log" 2>&1
  echo "compute-sanitizer $tool rc=$? ($(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|match|error' "$OUT/sanitizer-$tool.log" | tail -1))"
done
(cd /tmp && timeout 60 "$PY" "$REPO/bench/sanitize_ops.py") > "$OUT/sanitize-plain.log" 2>&1
echo "sanitize_ops without a tool rc=$? ($(tail -1 "$OUT/sanitize-plain.log"))"
fi

if want kernels; then
echo "benchmark gets $(cap 600 10) s"
(cd /tmp && timeout "$(cap 600 10)" "$PY" "$REPO/bench/run_kernels.py" --device cuda --min-time 0.02 --min-reps 5 \
  --out "$OUT/kernels-cuda.json") > "$OUT/kernels-cuda.txt" 2>&1
echo "benchmark rc=$? ($((SECONDS - START)) s)"
grep -E "FAIL" "$OUT/kernels-cuda.txt" | head -10
tail -14 "$OUT/kernels-cuda.txt"
fi

if want memory; then
(cd /tmp && timeout "$(cap 120 10)" "$PY" "$REPO/bench/memory_training.py" --device cuda --epochs 40 \
  --out "$OUT/memory-cuda.json") > "$OUT/memory-cuda.txt" 2>&1
echo "memory rc=$? ($(tail -1 "$OUT/memory-cuda.txt"))"
fi

if want training; then
(cd /tmp && timeout "$(cap 300 10)" "$PY" "$REPO/bench/run_training.py" --device cuda --min-window 0.5 \
  --out "$OUT/training-cuda.json") > "$OUT/training-cuda.log" 2>&1
echo "training benchmark rc=$? ($((SECONDS - START)) s)"
tail -8 "$OUT/training-cuda.log"
fi

if want tta; then
(cd /tmp && timeout "$(cap 240 5)" "$PY" "$REPO/bench/time_to_accuracy.py" --device cuda \
  --out "$OUT/time-to-accuracy-cuda.json") > "$OUT/time-to-accuracy-cuda.log" 2>&1
echo "time to accuracy rc=$? ($((SECONDS - START)) s)"
tail -4 "$OUT/time-to-accuracy-cuda.log"
fi
