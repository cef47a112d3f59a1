#!/usr/bin/env bash
# Everything that needs a GPU, in one command on the GPU machine: no network, at most 8 files back
# from $OUT, 10 minutes a command, 15 minutes in all with the machine's start.
#
#   bash bench/gpu_session.sh                       # there: results in $OUT
#   bash bench/gpu_session.sh --rehearse [--quick]  # on a CPU machine: the same run in a stand-in for
#                                                   # that machine, then a check of what came back
#
# Steps, most valuable first (one that is cut short or fails does not stop the rest):
#   probe       driver, versions, which tools exist               -> env.txt
#   build       offline install, sm_90 only, ptxas report         -> build.log, ptxas.txt
#   import      convkit and the device as it sees it              -> import.log
#   checks      every CUDA op against its CPU twin, no tool       -> checks.log
#   memcheck    the same under compute-sanitizer                  -> memcheck.log
#   kernels     convkit against cuDNN, each shape once            -> kernels-cuda.json (after every case)
#   racecheck, synccheck                                          -> racecheck.log, synccheck.log
#   training    training steps of lenet5 and cifar10_deep         -> training-cuda.json (after each model)
#   cuda-tests  the test cases on CUDA (pytest -k cuda)           -> pytest-cuda.log
#   then, as time allows: tests-rest (every other test), initcheck, memory, tta, cifar.
# A step gets its cap or, when less, the time left less the minimum that the essential steps after it
# need; one that cannot get its own minimum is skipped and says so, and so are the steps after a
# failed build. Each step's start, budget, time, exit status and last line go to $OUT/progress.log
# as they happen; env.txt, pytest-cuda.log and kernels-cuda.json are written into $OUT directly,
# every other log into $OUT/gpu-session.tar.gz, re-packed after each step and every 15 s, and
# training-cuda.json is copied into $OUT too when both models are done. So whatever ran before a
# kill comes back, in 6 files (8 while one is being replaced).
# Unpack the archive into bench/results/ afterwards.
#
# BUDGET: seconds for the whole run (default 420: with the machine's start the call takes under 9
# minutes and leaves time to rerun a failed step; give the command a limit of BUDGET + 30).
# STEPS: a subset, e.g. STEPS="build import kernels". PYTHON: the interpreter (default python3).
# Real MNIST for tta travels as .data/mnist.npz (11 MB, ignored by git; carry ".data"), made with
#   python -c "import numpy as np; from convkit.datasets import mnist; (a, b), (c, d) = mnist.load_data();
#              np.savez_compressed('.data/mnist.npz', x_train=a, y_train=b, x_test=c, y_test=d)"
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
if [ "${1:-}" = --rehearse ]; then
  shift
  exec "${PYTHON:-python3}" "$REPO/bench/gpu_rehearsal.py" "$@"
fi

# CONVKIT_REHEARSAL (set by bench/gpu_rehearsal.py): "full" or "quick". A rehearsal runs the
# benchmarks on the CPU; a quick one gives each step a quarter of its cap, a sixth of its minimum
# and a small workload, the whole run 60 s, and reuses an installed convkit.
REHEARSAL=${CONVKIT_REHEARSAL:-}
QUICK=$([ "$REHEARSAL" = quick ] && echo 1)
DEV=$([ -n "$REHEARSAL" ] && echo cpu || echo cuda)
BUDGET=${BUDGET:-$([ -n "$QUICK" ] && echo 60 || echo 420)}
STEPS=${STEPS:-}  # empty: all
BUILD_DIR=${BUILD_DIR:-"build/{wheel_tag}"}
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/convkit-gpu-out.XXXX")}
STATE=$(mktemp -d "${TMPDIR:-/tmp}/convkit-gpu.XXXX")
WORK=$STATE/logs  # everything packed into the archive
mkdir -p "$OUT" "$WORK"
ARCHIVE=$OUT/gpu-session.tar.gz
PROGRESS=$OUT/progress.log
FINAL=5       # kept back for the last pack
export PYTHONUNBUFFERED=1 REPO OUT WORK DEV QUICK REHEARSAL BUILD_DIR
[ -f "$REPO/.data/mnist.npz" ] && export CONVKIT_DATA="$REPO/.data"

# name, cap and minimum useful budget in seconds, and whether the steps before it keep its minimum
# back for it (1) or it runs only on what they leave (0).
TABLE="
probe       30   5 1
build      180  60 1
import      30  10 1
checks      45  10 1
memcheck    90  30 1
kernels    110  40 1
racecheck   60  20 1
synccheck   45  15 1
training    90  30 1
cuda-tests  90  30 1
tests-rest 150  30 0
initcheck   60  20 0
memory      60  20 0
tta        150  60 0
cifar       30  10 0"
NAMES=() CAPS=() MINS=() KEEP=()
while read -r name cap min keep; do
  [ -n "$name" ] || continue
  [ -n "$QUICK" ] && cap=$(( cap / 4 > 6 ? cap / 4 : 6 )) min=$(( min / 6 > 2 ? min / 6 : 2 ))
  NAMES+=("$name") CAPS+=("$cap") MINS+=("$min") KEEP+=("$keep")
done <<< "$TABLE"

START=$SECONDS
now() { echo $((SECONDS - START)); }
say() { printf '[%4d s] %s\n' "$(now)" "$*" | tee -a "$PROGRESS"; }
want() { [ -z "$STEPS" ] || [[ " $STEPS " == *" $1 "* ]]; }

pack() {  # the logs as one archive in $OUT, replaced whole; one pack at a time
  local cmd='tar czf "$1.part" -C "$2" . 2>/dev/null; [ $? -le 1 ] && mv -f "$1.part" "$1" || rm -f "$1.part"'
  if command -v flock >/dev/null; then flock -w 60 "$STATE/pack.lock" sh -c "$cmd" _ "$ARCHIVE" "$WORK"
  else sh -c "$cmd" _ "$ARCHIVE" "$WORK"; fi
}
publish() {  # copy a finished result file into $OUT, replacing any older copy whole
  cp "$1" "$OUT/.$(basename "$1").part" && mv -f "$OUT/.$(basename "$1").part" "$OUT/$(basename "$1")"
}
run_pytest() {  # pytest's selection, on the installed convkit: run from outside the checkout
  local xdist=()
  "$PY" -c "import xdist" 2>/dev/null && xdist=(-n "$(( $(nproc) < 8 ? $(nproc) : 8 ))")
  cd /tmp && "$PY" -m pytest -q -p no:cacheprovider "${xdist[@]}" --rootdir "$REPO" -c "$REPO/pyproject.toml" \
    "$REPO/python_tests" "$@"
}
sanitize() {  # compute-sanitizer tool over every CUDA op
  cd /tmp && compute-sanitizer --tool "$1" --error-exitcode 9 "$PY" "$REPO/bench/sanitize_ops.py"
}

# ---------------------------------------------------------------------------------------- steps
# Each runs in a shell of its own under its budget, its output in the log that logfile names.
step_probe() {
  echo "# $(date -u +%FT%TZ) | $(uname -srm) | $(nproc) cores | $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 2^20}' /proc/meminfo)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.sm --format=csv 2>&1
  nvidia-smi 2>&1 | head -20
  for tool in nvidia-smi nvcc compute-sanitizer cmake ninja g++ flock ncu cuobjdump; do
    printf '%-18s %s\n' "$tool" "$(command -v "$tool" || echo MISSING)"
  done
  nvcc --version 2>&1 | tail -2
  cmake --version 2>&1 | head -1
  "$PY" - <<'EOF'
import importlib.metadata as md, importlib.util, os, sys, sysconfig

managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
print(f"python {sys.version.split()[0]} at {sys.executable}; venv: {sys.prefix != sys.base_prefix}; "
      f"externally managed: {managed}; pip index: {os.environ.get('PIP_INDEX_URL', 'default')}")
found, missing = [], []
for module, dist in (("numpy", "numpy"), ("torch", "torch"), ("cupy", "cupy-cuda13x"), ("pybind11", "pybind11"),
                     ("scikit_build_core", "scikit-build-core"), ("pytest", "pytest"), ("xdist", "pytest-xdist"),
                     ("hypothesis", "hypothesis"), ("tqdm", "tqdm"), ("scipy", "scipy"), ("PIL", "pillow"),
                     ("matplotlib", "matplotlib"), ("keras", "keras")):
    try:
        assert importlib.util.find_spec(module)
        found.append(f"{dist} {md.version(dist)}")
    except (ImportError, AssertionError, md.PackageNotFoundError):
        missing.append(dist)
print("packages:", ", ".join(found))
try:
    import torch
    print(f"torch CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, GPU: {torch.cuda.is_available()}")
except Exception as exc:  # noqa: BLE001 - the probe reports whatever is wrong
    print("torch:", repr(exc))
print("summary:", ", ".join(found[:3]), "| missing:", ", ".join(missing) or "none")
EOF
}

step_build() {
  if [ -n "$QUICK" ] && (cd /tmp && "$PY" -c "import convkit._cpu") 2>/dev/null; then
    echo "quick rehearsal: convkit is installed already, not rebuilt:"
    (cd /tmp && "$PY" -c "import convkit; print(convkit.__file__)")
    return 0
  fi
  local cuda=ON
  if [ -n "$REHEARSAL" ] && ! command -v nvcc >/dev/null; then
    cuda=OFF
    echo "rehearsal: no nvcc on this machine, so the CPU module only (CONVKIT_CUDA=OFF)"
  fi
  # Non-editable, from what the image has; every later step runs outside the checkout, so the
  # installed package (with its compiled modules) is the one imported.
  CONVKIT_CUDA=$cuda "$PY" -m pip install -v --no-build-isolation --no-deps --no-index --no-cache-dir \
    -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 -C cmake.define.CMAKE_CUDA_FLAGS=-Xptxas=-v \
    -C "build-dir=$BUILD_DIR" "$REPO" 2>&1
  local rc=$?
  grep -E "ptxas" "$WORK/build.log" > "$WORK/ptxas.txt"
  echo "build rc=$rc, CONVKIT_CUDA=$cuda, sm_90; $(grep -c "ptxas info *: Used" "$WORK/ptxas.txt") kernels in ptxas.txt"
  return $rc
}

step_import() {
  cd /tmp && "$PY" -c "
import convkit
print('convkit', convkit.__version__, 'from', convkit.__file__)
print('CUDA', convkit.cuda_status())
import convkit._cuda as c
print(c.device_info())"
}

step_checks() { cd /tmp && "$PY" "$REPO/bench/sanitize_ops.py"; }
step_memcheck() { sanitize memcheck; }
step_racecheck() { sanitize racecheck; }
step_synccheck() { sanitize synccheck; }
step_initcheck() { sanitize initcheck; }

step_kernels() {
  local quick=()
  [ -n "$QUICK" ] && quick=(--limit 1 --min-time 0.01 --min-reps 3)
  cd /tmp && "$PY" "$REPO/bench/run_kernels.py" --device "$DEV" --min-time 0.02 --min-reps 5 "${quick[@]}" \
    --out "$OUT/kernels-$DEV.json" --table "$WORK/kernels-$DEV.txt"
}

step_training() {
  cd /tmp && "$PY" "$REPO/bench/run_training.py" --device "$DEV" --models lenet5 cifar10_deep \
    --min-window "$([ -n "$QUICK" ] && echo 0.02 || echo 0.5)" --out "$WORK/training-$DEV.json" \
    && publish "$WORK/training-$DEV.json"
}

step_cuda_tests() { run_pytest -k "cuda and not emulated"; }
step_tests_rest() { run_pytest -k "not cuda or emulated"; }

step_memory() {
  cd /tmp && "$PY" "$REPO/bench/memory_training.py" --device "$DEV" --epochs "$([ -n "$QUICK" ] && echo 2 || echo 40)" \
    --out "$WORK/memory-$DEV.json"
}

step_tta() {
  cd /tmp && "$PY" "$REPO/bench/time_to_accuracy.py" --device "$DEV" --out "$WORK/time-to-accuracy-$DEV.json"
}

step_cifar() {  # CIFAR-10 is on no registry: is there a copy the image's frameworks cached?
  timeout 15 find / -xdev -maxdepth 6 \( -iname "cifar-10*" -o -iname "cifar10*" \) -not -name "*.py" \
    -not -path "$REPO/*" -not -path "/tmp/*" -not -path "/proc/*" 2>/dev/null | head -20 > "$WORK/cifar-found.txt"
  while read -r found; do  # the loader checks the official digests
    (cd /tmp && "$PY" -c "import sys; from convkit.datasets import cifar10; (x, y), _ = cifar10.load_data(path=sys.argv[1]); print('verified CIFAR-10', x.shape, sys.argv[1])" "$found") 2>&1 | tail -1
  done < "$WORK/cifar-found.txt"
  echo "$(wc -l < "$WORK/cifar-found.txt") candidate(s) for CIFAR-10 (cifar-found.txt)"
}

export -f run_pytest sanitize publish $(compgen -A function step_)
export PY STATE

logfile() {  # where a step's output goes
  case $1 in
    probe) echo "$OUT/env.txt" ;;
    cuda-tests) echo "$OUT/pytest-cuda.log" ;;
    *) echo "$WORK/$1.log" ;;
  esac
}

use_python_that_installs() {  # a venv on top of the system's packages when the system Python refuses installs
  "$PY" - <<'EOF' && return
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
in_venv = sys.prefix != sys.base_prefix
sys.exit(0 if in_venv or (not managed and os.access(sysconfig.get_path("platlib"), os.W_OK)) else 1)
EOF
  echo "$PY refuses installs: installing into a venv with the system's packages, $STATE/venv"
  "$PY" -m venv --system-site-packages --without-pip "$STATE/venv" && PY=$STATE/venv/bin/python
}

STEP_PID=
finish() {
  trap - EXIT TERM INT HUP
  [ -n "$STEP_PID" ] && kill -TERM "$STEP_PID" 2>/dev/null && sleep 1
  [ -n "${PACKER:-}" ] && kill "$PACKER" 2>/dev/null
  pack
  say "# end: ${1:-finished} after $(now) s of $BUDGET; $(ls -A "$OUT" | wc -l) files in $OUT"
  echo "results in $OUT"
  rm -rf "$STATE"  # its logs are in the archive
}
trap 'finish' EXIT
trap 'finish "killed by a signal"; exit 143' TERM INT HUP

say "# convkit GPU session | $(date -u +%FT%TZ) | budget $BUDGET s | device $DEV | rehearsal ${REHEARSAL:-no} | steps: ${NAMES[*]}"
(while sleep 15; do pack; done) > /dev/null 2>&1 &
PACKER=$!
BUILD_FAILED=
for i in "${!NAMES[@]}"; do
  name=${NAMES[$i]} cap=${CAPS[$i]} min=${MINS[$i]}
  if ! want "$name"; then say "$name skipped: not in STEPS"; continue; fi
  if [ -n "$BUILD_FAILED" ] && [ "$name" != cifar ]; then say "$name skipped: the build failed"; continue; fi
  keep=0
  for j in "${!NAMES[@]}"; do
    ((j > i)) && [ "${KEEP[$j]}" = 1 ] && want "${NAMES[$j]}" && keep=$((keep + MINS[j]))
  done
  avail=$((BUDGET - $(now) - keep - FINAL))
  budget=$((cap < avail ? cap : avail))
  if ((budget < min)); then say "$name skipped: $avail s left, needs $min"; continue; fi
  log=$(logfile "$name")
  [ "$name" = build ] && use_python_that_installs >> "$log" 2>&1
  say "$name start budget $budget s, log $(basename "$log")$([[ $log == "$WORK"/* ]] && echo " (in $(basename "$ARCHIVE"))")"
  t0=$SECONDS
  grace=$((budget < 12 ? 1 : 3))  # TERM this long before the budget ends, then KILL
  timeout -k "$grace" $((budget - grace)) bash -c "step_${name//-/_}" >> "$log" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID"
  rc=$?
  STEP_PID=
  took=$((SECONDS - t0))
  case $rc in 0) end=done ;; 124|137) end=timeout ;; *) end=FAILED ;; esac
  say "$name $end rc=$rc in $took s of $budget: $(grep -v '^\s*$' "$log" | tail -1 | cut -c1-200)"
  if [ "$rc" != 0 ]; then grep -v '^\s*$' "$log" | tail -12 | sed 's/^/    | /' | cut -c1-220 >> "$PROGRESS"; fi
  [ "$name" = build ] && [ "$rc" != 0 ] && BUILD_FAILED=1
  rm -f "$OUT"/.*.tmp  # what a writer killed mid-write left
  pack
done
