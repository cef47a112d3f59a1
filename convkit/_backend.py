"""Where arrays live and which compiled module serves them.

NumPy arrays go to ``convkit._cpu`` (always built). CuPy arrays go to
``convkit._cuda`` through :mod:`convkit._gpu`, imported only when first needed, so
``import convkit`` works with no GPU, no driver and no CuPy.
"""

from __future__ import annotations

import functools
import os
import platform
import re

import numpy as np

from convkit import _cpu


def set_num_threads(n: int) -> None:
    """Set how many threads the CPU kernels use (default: OMP_NUM_THREADS, else all cores)."""
    _cpu.set_num_threads(int(n))


def get_num_threads() -> int:
    """Number of threads the CPU kernels use."""
    return _cpu.get_num_threads()


def is_cupy(a) -> bool:
    """True when ``a`` is a CuPy array; never imports CuPy."""
    return type(a).__module__.split(".")[0] == "cupy"


@functools.lru_cache(maxsize=None)
def _cuda_probe() -> tuple[bool, str]:
    try:
        try:
            from convkit import _cuda  # noqa: F401
        except ImportError:
            from convkit._compiled import from_installed_copy

            from_installed_copy("_cuda")
    except ImportError as e:
        return False, f"the CUDA module was not built or cannot load ({e}); rebuild with CONVKIT_CUDA=ON"
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install 'convkit[gpu]')"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError when there is no driver
        return False, f"no usable CUDA driver ({e})"
    if n == 0:
        return False, "no CUDA device is visible"
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return True, f"{n} device(s), device 0: {name.decode() if isinstance(name, bytes) else name}"


def has_cuda() -> bool:
    """True when CuPy arrays can run on convkit's CUDA kernels. Never raises; see cuda_status()."""
    return _cuda_probe()[0]


def cuda_status() -> str:
    """One line saying whether the CUDA kernels are usable, and why not when they are not."""
    ok, why = _cuda_probe()
    return ("available: " if ok else "unavailable: ") + why


def kernels_for(a, op: str):
    """The kernel module for an array: convkit._cpu for NumPy, convkit._gpu for CuPy."""
    if isinstance(a, np.ndarray):
        return _cpu
    if is_cupy(a):
        ok, why = _cuda_probe()
        if not ok:
            raise RuntimeError(f"{op}: got a CuPy array but convkit's CUDA kernels are {why}")
        from convkit import _gpu

        return _gpu
    raise TypeError(f"{op}: expected a numpy.ndarray or cupy.ndarray, got {type(a).__name__}")


def device_name(device: str = "cpu") -> str:
    """A readable name of the CPU (model and logical cores) or of CUDA device 0, for result files."""
    if device == "cuda":
        return _cuda_probe()[1].split("device 0: ", 1)[-1]
    cpu, isa = platform.processor() or "unknown CPU", ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        cpu = re.search(r"model name\s*:\s*(.*)", info).group(1).strip()
        # The widest vector unit, which convkit's CPU kernels and peers such as oneDNN both pick at run time.
        flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split())
        isa = next((f" ({name})" for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags), "")
    except (OSError, AttributeError):
        pass
    return f"{cpu}{isa}, {os.cpu_count()} logical cores"
