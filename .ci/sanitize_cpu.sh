#!/usr/bin/env bash
# The CPU kernels and bindings under AddressSanitizer + UndefinedBehaviorSanitizer: build an
# instrumented convkit._cpu into its own venv and run the op tests with it; any report fails.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
venv=$tmp/venv
python -m venv "$venv"
CONVKIT_CUDA=OFF "$venv/bin/python" -m pip install -q -C build-dir=build/sanitize \
  -C cmake.define.CONVKIT_SANITIZE=ON ".[test]"
so=$(ls "$venv"/lib/python3*/site-packages/convkit/_cpu*.so)
ldd "$so" | grep libasan >/dev/null || { echo "$so is not instrumented"; exit 1; }
# CPython is not built with ASan: its runtime must load first, and libstdc++ before the module so
# that ASan can intercept C++ exceptions (the bindings turn them into Python errors).
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# Run outside the checkout so the instrumented install, not the sources, is imported; -s keeps a
# sanitizer report visible when it ends the process.
tests=$PWD/python_tests
cd "$tmp"
"$venv/bin/python" -m pytest -q -s -p no:cacheprovider "$tests/test_conv2d.py" "$tests/test_pool2d.py" "$tests/test_batch_norm.py" \
  "$tests/test_ops_errors.py" "$tests/test_reference.py" "$tests/test_depthwise.py" "$tests/test_pointwise.py" \
  "$tests/test_conv_batch_norm.py"
