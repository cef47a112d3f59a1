"""CuPy adapter over convkit._cuda with the same function signatures as convkit._cpu.

Each array is checked (dtype, C-contiguity, exact shape, current device) before
its pointer is passed; kernels run on CuPy's current stream and never synchronise.
bias, dbias and argmax may be None (a null pointer).
"""

from __future__ import annotations

import cupy
import numpy as np

from convkit import _cpu, _cuda


def _ptr(a, name: str, shape, dtype=np.float32) -> int:
    if a is None:
        return 0
    if not isinstance(a, cupy.ndarray):
        raise TypeError(f"{name} must be a cupy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if a.device.id != cupy.cuda.Device().id:
        raise ValueError(f"{name} is on GPU {a.device.id} but the current device is GPU {cupy.cuda.Device().id}")
    return a.data.ptr


def _stream() -> int:
    return cupy.cuda.get_current_stream().ptr


def device_info() -> dict:
    """The current device as the CUDA module sees it: name, compute capability, multiprocessors, memory."""
    return _cuda.device_info()


def conv2d_fwd(x, kernel, bias, y, strides, dilation, padding, relu=False, tf32=False):
    out = _cpu.conv2d_output_shape(x.shape, kernel.shape, strides, dilation, padding)
    _cuda.conv2d_fwd(_ptr(x, "x", x.shape), _ptr(kernel, "kernel", kernel.shape),
                     _ptr(bias, "bias", (kernel.shape[3],)), _ptr(y, "y", out), tuple(x.shape), tuple(kernel.shape),
                     strides, dilation, padding, relu, tf32, _stream())


def conv2d_bwd_data(dy, kernel, dx, strides, dilation, padding, tf32=False):
    out = _cpu.conv2d_output_shape(dx.shape, kernel.shape, strides, dilation, padding)
    _cuda.conv2d_bwd_data(_ptr(dy, "dy", out), _ptr(kernel, "kernel", kernel.shape), _ptr(dx, "dx", dx.shape),
                          tuple(dx.shape), tuple(kernel.shape), strides, dilation, padding, tf32, _stream())


def conv2d_bwd_filter(x, dy, dkernel, dbias, strides, dilation, padding, tf32=False):
    out = _cpu.conv2d_output_shape(x.shape, dkernel.shape, strides, dilation, padding)
    _cuda.conv2d_bwd_filter(_ptr(x, "x", x.shape), _ptr(dy, "dy", out), _ptr(dkernel, "dkernel", dkernel.shape),
                            _ptr(dbias, "dbias", (dkernel.shape[3],)), tuple(x.shape), tuple(dkernel.shape),
                            strides, dilation, padding, tf32, _stream())


def max_pool2d_fwd(x, y, argmax, pool_size, strides, padding):
    out = _cpu.pool2d_output_shape(x.shape, pool_size, strides, padding)
    _cuda.max_pool2d_fwd(_ptr(x, "x", x.shape), _ptr(y, "y", out), _ptr(argmax, "argmax", out, np.int32),
                         tuple(x.shape), pool_size, strides, padding, _stream())


def max_pool2d_bwd(dy, argmax, dx, pool_size, strides, padding):
    out = _cpu.pool2d_output_shape(dx.shape, pool_size, strides, padding)
    _cuda.max_pool2d_bwd(_ptr(dy, "dy", out), _ptr(argmax, "argmax", out, np.int32), _ptr(dx, "dx", dx.shape),
                         tuple(dx.shape), pool_size, strides, padding, _stream())


def avg_pool2d_fwd(x, y, pool_size, strides, padding):
    out = _cpu.pool2d_output_shape(x.shape, pool_size, strides, padding)
    _cuda.avg_pool2d_fwd(_ptr(x, "x", x.shape), _ptr(y, "y", out), tuple(x.shape), pool_size, strides, padding,
                         _stream())


def avg_pool2d_bwd(dy, dx, pool_size, strides, padding):
    out = _cpu.pool2d_output_shape(dx.shape, pool_size, strides, padding)
    _cuda.avg_pool2d_bwd(_ptr(dy, "dy", out), _ptr(dx, "dx", dx.shape), tuple(dx.shape), pool_size, strides,
                         padding, _stream())
