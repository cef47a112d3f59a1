"""Best-effort control of OpenBLAS's thread count (the BLAS behind NumPy's matmul).

While the CPU conv kernels run on OpenMP threads, idle OpenBLAS threads left spinning
after a Dense layer's matmul compete with them for the same cores; on a 2-core machine
this more than doubles a LeNet step. fit() therefore keeps BLAS to one thread while it
trains on the CPU. Where OpenBLAS cannot be found (other BLAS, other OS) this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")


@functools.lru_cache(maxsize=None)
def _openblas():
    """(get, set) functions of the loaded OpenBLAS, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            getter = name.replace("set_num", "get_num")
            if hasattr(lib, name) and hasattr(lib, getter):
                return getattr(lib, getter), getattr(lib, name)
    return None


@contextlib.contextmanager
def blas_threads(n: int):
    """Run the block with OpenBLAS limited to ``n`` threads, then restore the previous count."""
    fns = _openblas()
    if fns is None:
        yield
        return
    get, set_ = fns
    before = get()
    set_(n)
    try:
        yield
    finally:
        set_(before)
