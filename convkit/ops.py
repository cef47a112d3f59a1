"""Stateless convolution and pooling operations on NHWC float32 arrays.

Each function allocates the result and dispatches to the compiled kernels: NumPy
arrays run on the CPU (C++), CuPy arrays on the GPU (CUDA), through the same
function of either module, which checks every array (device, dtype, shape,
contiguity) and every argument once. Python parses arguments the kernels take as
plain values (pairs, padding names) and checks the rank of an array whose shape it
reads to allocate the result. Layouts follow Keras: activations (N, H, W, C),
kernels (kh, kw, in, out). ``padding='same'`` follows TensorFlow exactly (the odd
pixel of padding goes to the bottom/right). Inputs must be float32: other dtypes
raise TypeError rather than being converted silently. Non-contiguous inputs are
copied.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from convkit import _cpu
from convkit._blas import blas_threads
from convkit._backend import is_cupy, kernels_for
from convkit import autodiff
from convkit.autodiff import register

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv2d_backward_data",
    "conv2d_backward_filter",
    "conv2d_output_shape",
    "depthwise_conv2d",
    "depthwise_conv2d_backward_data",
    "depthwise_conv2d_backward_filter",
    "depthwise_conv2d_output_shape",
    "max_pool2d",
    "max_pool2d_with_argmax",
    "max_pool2d_backward",
    "max_pool2d_backward_from_argmax",
    "avg_pool2d",
    "avg_pool2d_backward",
    "pool2d_output_shape",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "batch_norm_train",
    "batch_norm_train_backward",
    "batch_norm_inference",
    "conv_batch_norm_inference",
    "add_activation",
    "add", "subtract", "multiply", "divide", "negative", "exp", "log", "sqrt", "square", "relu", "sigmoid", "tanh",
    "softmax", "matmul", "swapaxes", "dense", "sum", "mean", "reshape", "transpose", "concatenate",
    "loss", "activation_loss", "penalty", "custom_gradient_call",
]

_PRECISIONS = ("float32", "tf32")
default_precision = "float32"
"""Arithmetic of GPU convolutions when a call does not say: 'float32' (strict) or 'tf32'."""


def _pair(v, name: str, op: str) -> tuple[int, int]:
    if type(v) is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int:
        return v
    vals = (v, v) if isinstance(v, numbers.Integral) else tuple(v) if isinstance(v, (tuple, list)) else None
    if vals is None or len(vals) != 2 or not all(isinstance(e, numbers.Integral) and not isinstance(e, bool) for e in vals):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    return int(vals[0]), int(vals[1])


def _padding(p, op: str) -> str:
    if not isinstance(p, str):
        raise TypeError(f"{op}: padding must be 'valid' or 'same', got {p!r}")
    return p.lower()


def _array(a, name: str, op: str, ndim: int | None = None):
    """``a`` C-contiguous (copied when it is not), its rank checked when the op reads its shape (``ndim``).
    Device, dtype and exact shape are the kernels' checks."""
    try:
        if ndim is not None and a.ndim != ndim:
            raise ValueError(f"{op}: {name} must be {ndim}-D, got shape {tuple(a.shape)}")
        return a if a.flags.c_contiguous else a.copy(order="C")
    except AttributeError:
        kernels_for(a, op)  # a TypeError naming what it got, for anything but a NumPy or CuPy array
        raise


def _optional(a, name: str, op: str):
    return None if a is None else _array(a, name, op)


def _xp(a):
    if is_cupy(a):
        import cupy

        return cupy
    return np


def _host_pointwise(x, fn, lo=0.0, hi=0.0):
    """``fn`` ('clamp', 'sigmoid', 'silu') in one parallel pass of the CPU kernel when ``x`` is a C-contiguous
    float32 NumPy array (feature maps are), else None: NumPy would take two to five single-threaded passes."""
    if type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous:
        return _cpu.pointwise(x, fn, lo, hi)
    return None


def _relu_grad(dy, y):
    """ReLU's backward from its output: 0 where y <= 0, else dy (a select, as PyTorch's threshold_backward: a
    NaN gradient behind a closed unit stays 0); one parallel pass on the CPU instead of NumPy's two."""
    g = _host_binary(dy, y, "relu_grad") if dy.shape == y.shape else None
    return _xp(dy).where(y <= 0, 0, dy).astype(dy.dtype, copy=False) if g is None else g


def _host_binary(a, b, op, then=(None, 0.0, 0.0)):
    """a op b ('add', 'subtract', 'multiply', 'divide', 'relu_grad'), then ``then`` (a kernel's (function, lo,
    hi)), in one parallel pass of the CPU kernel when both are C-contiguous float32 NumPy arrays of at least 32K
    values together and one repeats the other along one run of axes ((N, H, W, C) and (N, 1, 1, C), (N, H, W, 3)
    and (3,), equal shapes), the repeated one second where the op does not commute; else None, for NumPy's
    single-threaded loops."""
    if type(a) is not np.ndarray or type(b) is not np.ndarray or a.dtype != np.float32 or b.dtype != np.float32 \
            or a.size + b.size < 1 << 15 or not (a.flags.c_contiguous and b.flags.c_contiguous):
        return None
    if a.size < b.size:
        if op not in ("add", "multiply"):
            return None
        a, b = b, a
    rank = max(a.ndim, b.ndim)
    sa, sb = (1,) * (rank - a.ndim) + a.shape, (1,) * (rank - b.ndim) + b.shape
    repeat = [i for i in range(rank) if sb[i] != sa[i]]
    if any(sb[i] != 1 for i in repeat) or (repeat and repeat[-1] - repeat[0] + 1 != len(repeat)):
        return None
    i, j = (repeat[0], repeat[-1] + 1) if repeat else (0, 0)
    outer, mid, inner = math.prod(sa[:i]), math.prod(sa[i:j]), math.prod(sa[j:])
    if inner < 16:  # runs shorter than a vector: b repeated k times makes them longer, where k divides mid
        k = next((k for k in range(-(-16 // max(inner, 1)), 65) if mid % k == 0), None) if outer == 1 else None
        if k is None:
            return None
        b, inner, mid = np.tile(b.reshape(-1), k), inner * k, mid // k
    return _cpu.binary(a.reshape(sa), b, op, outer, mid, inner, None, *then)


_ACTIVATION_OPS = {"relu": lambda x: relu(x), "relu6": lambda x: relu6(x), "sigmoid": lambda x: sigmoid(x),
                   "silu": lambda x: silu(x), "swish": lambda x: silu(x)}


def add_activation(a, b, activation):
    """Inference only: ``activation(a + b)`` ('relu', 'relu6', 'sigmoid', 'silu' or 'swish'), on the CPU in
    one pass over the sum (a residual block's sum and the ReLU after it); elsewhere the two ops. It has no
    gradient: while a GradientTape records it raises (use add and the activation one by one to train)."""
    if autodiff.recording():
        raise RuntimeError("add_activation has no gradient and a GradientTape is recording; use add and the "
                           "activation one by one to train")
    if activation not in _ACTIVATION_OPS:
        raise ValueError(f"add_activation: activation must be one of {', '.join(_ACTIVATION_OPS)}, "
                         f"got {activation!r}")
    y = _host_binary(a, b, "add", _FUSED_ACTIVATIONS[activation])
    return _ACTIVATION_OPS[activation](add(a, b)) if y is None else y


def _product(a, b):
    """a @ b; on the CPU with BLAS on one thread. OpenBLAS's worker threads spin for a long while after a
    multithreaded product and take the cores from the OpenMP kernels that run next (on 2 cores an
    EfficientNetB1 forward at batch 1 took 116 ms instead of 49); fit and predict already run this way."""
    if is_cupy(a) or is_cupy(b):
        return a @ b
    with blas_threads(1):
        return a @ b


def _precision(p, op: str) -> bool:
    p = default_precision if p is None else p
    if p not in _PRECISIONS:
        raise ValueError(f"{op}: precision must be one of {_PRECISIONS}, got {p!r}")
    return p == "tf32"


def _windowed_output_shape(op, descriptor, kernel_axes, x_shape, kernel_shape, strides, padding, dilation_rate):
    """Output shape from a C++ descriptor's shape function, after the rank checks both convolutions share."""
    xs, ks = tuple(x_shape), tuple(kernel_shape)
    if len(xs) != 4:
        raise ValueError(f"{op}: input shape must be 4-D (N, H, W, C), got {xs}")
    if len(ks) != 4:
        raise ValueError(f"{op}: kernel shape must be 4-D ({kernel_axes}), got {ks}")
    return tuple(descriptor(xs, ks, *_geometry(op, strides, padding, dilation_rate)))


def conv2d_output_shape(x_shape, kernel_shape, strides=1, padding="valid", dilation_rate=1) -> tuple:
    """(N, OH, OW, filters) of conv2d for these shapes; ValueError on any invalid combination."""
    return _windowed_output_shape("conv2d", _cpu.conv2d_output_shape, "kh, kw, in, out", x_shape, kernel_shape,
                                  strides, padding, dilation_rate)


def pool2d_output_shape(x_shape, pool_size=2, strides=None, padding="valid") -> tuple:
    """(N, OH, OW, C) of a pooling op for this input shape; ValueError on any invalid combination."""
    op = "pool2d"
    xs = tuple(x_shape)
    if len(xs) != 4:
        raise ValueError(f"{op}: input shape must be 4-D (N, H, W, C), got {xs}")
    return tuple(_cpu.pool2d_output_shape(xs, *_pool_geometry(op, pool_size, strides, padding)))


def _conv_args(op, x, kernel, strides, padding, dilation_rate):
    return _array(x, "x", op), _array(kernel, "kernel", op), _geometry(op, strides, padding, dilation_rate)


def _geometry(op, strides, padding, dilation_rate):
    return _pair(strides, "strides", op), _pair(dilation_rate, "dilation_rate", op), _padding(padding, op)


def _conv2d_save(needs, inputs, y, strides=1, padding="valid", dilation_rate=1, activation=None, precision=None):
    x, kernel, _ = inputs
    return (x if needs[1] or needs[2] else None, kernel if needs[0] else None, tuple(x.shape), tuple(kernel.shape),
            y if activation == "relu" else None)


def _conv2d_grad(saved, dy, needs, strides=1, padding="valid", dilation_rate=1, activation=None, precision=None):
    x, kernel, x_shape, kernel_shape, y = saved
    if y is not None:  # the fused ReLU
        dy = _relu_grad(dy, y)
    geometry = (strides, padding, dilation_rate, precision)
    dx = conv2d_backward_data(dy, kernel, x_shape, *geometry) if needs[0] else None
    dk = db = None
    if needs[1] or needs[2]:
        dk, db = conv2d_backward_filter(dy, x, kernel_shape, *geometry)
    return dx, dk, db


@register("conv2d", inputs=("x", "kernel", "bias"), grad=_conv2d_grad, save=_conv2d_save)
def conv2d(x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1, activation=None, precision=None):
    """2-D convolution (cross-correlation, as in Keras) of NHWC ``x`` with HWIO ``kernel``.

    ``activation`` may be None/'linear' or 'relu' (fused into the kernel's epilogue).
    ``precision`` ('float32' or 'tf32') selects GPU arithmetic; the CPU is always float32.
    """
    op = "conv2d"
    x, kernel, geometry = _conv_args(op, x, kernel, strides, padding, dilation_rate)
    if activation not in (None, "linear", "relu"):
        raise ValueError(f"{op}: fused activation must be None, 'linear' or 'relu', got {activation!r}")
    return kernels_for(x, op).conv2d_fwd(x, kernel, _optional(bias, "bias", op), None, *geometry,
                                         activation == "relu", _precision(precision, op))


def conv2d_backward_data(dy, kernel, x_shape, strides=1, padding="valid", dilation_rate=1, precision=None):
    """Gradient of conv2d with respect to its input, of shape ``x_shape``."""
    op = "conv2d_backward_data"
    dy, kernel = _array(dy, "dy", op), _array(kernel, "kernel", op)
    dx = _xp(dy).empty(tuple(x_shape), np.float32)
    kernels_for(dy, op).conv2d_bwd_data(dy, kernel, dx, *_geometry(op, strides, padding, dilation_rate),
                                        _precision(precision, op))
    return dx


def conv2d_backward_filter(dy, x, kernel_shape, strides=1, padding="valid", dilation_rate=1, precision=None):
    """Gradients of conv2d with respect to its kernel and bias: (dkernel, dbias)."""
    op = "conv2d_backward_filter"
    dy, x = _array(dy, "dy", op), _array(x, "x", op)
    xp = _xp(x)
    dkernel, dbias = xp.empty(tuple(kernel_shape), np.float32), xp.empty(tuple(kernel_shape)[-1:], np.float32)
    kernels_for(x, op).conv2d_bwd_filter(x, dy, dkernel, dbias, *_geometry(op, strides, padding, dilation_rate),
                                         _precision(precision, op))
    return dkernel, dbias


def conv2d_backward(dy, x, kernel, strides=1, padding="valid", dilation_rate=1, precision=None, need_dx=True):
    """Gradients of conv2d: returns (dx, dkernel, dbias) for upstream gradient ``dy``.

    With ``need_dx=False`` dx is skipped and returned as None (a network's first layer).
    """
    op = "conv2d_backward"
    x, kernel, _ = _conv_args(op, x, kernel, strides, padding, dilation_rate)
    args = (strides, padding, dilation_rate, precision)
    dx = conv2d_backward_data(dy, kernel, x.shape, *args) if need_dx else None
    return (dx, *conv2d_backward_filter(dy, x, kernel.shape, *args))


_DEPTHWISE_ACTIVATIONS = (None, "linear", "relu", "relu6")


def depthwise_conv2d_output_shape(x_shape, kernel_shape, strides=1, padding="valid", dilation_rate=1) -> tuple:
    """(N, OH, OW, C * depth_multiplier) of depthwise_conv2d; ValueError on any invalid combination."""
    return _windowed_output_shape("depthwise_conv2d", _cpu.depthwise2d_output_shape,
                                  "kh, kw, channels, depth_multiplier", x_shape, kernel_shape, strides, padding,
                                  dilation_rate)


def _depthwise_save(needs, inputs, y, strides=1, padding="valid", dilation_rate=1, activation=None):
    x, kernel, _ = inputs
    return (x if needs[1] or needs[2] else None, kernel if needs[0] else None, tuple(x.shape), tuple(kernel.shape),
            y if activation in ("relu", "relu6") else None)


def _depthwise_grad(saved, dy, needs, strides=1, padding="valid", dilation_rate=1, activation=None):
    x, kernel, x_shape, kernel_shape, y = saved
    if activation == "relu":
        dy = _relu_grad(dy, y)
    elif activation == "relu6":
        dy = dy * ((y > 0) & (y < 6))
    geometry = (strides, padding, dilation_rate)
    dx = depthwise_conv2d_backward_data(dy, kernel, x_shape, *geometry) if needs[0] else None
    dk = db = None
    if needs[1] or needs[2]:
        dk, db = depthwise_conv2d_backward_filter(dy, x, kernel_shape, *geometry, need_dbias=needs[2])
    return dx, dk, db


@register("depthwise_conv2d", inputs=("x", "kernel", "bias"), grad=_depthwise_grad, save=_depthwise_save)
def depthwise_conv2d(x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1, activation=None):
    """Depthwise 2-D convolution of NHWC ``x`` with ``kernel`` (kh, kw, C, depth_multiplier), as Keras's.

    Output channel ``c * depth_multiplier + m`` convolves input channel ``c`` with ``kernel[..., c, m]``.
    ``activation`` may be None/'linear', 'relu' or 'relu6' (fused into the kernel).
    """
    op = "depthwise_conv2d"
    x, kernel, geometry = _conv_args(op, x, kernel, strides, padding, dilation_rate)
    if activation not in _DEPTHWISE_ACTIVATIONS:
        raise ValueError(f"{op}: fused activation must be None, 'linear', 'relu' or 'relu6', got {activation!r}")
    return kernels_for(x, op).depthwise2d_fwd(x, kernel, _optional(bias, "bias", op), None, *geometry,
                                              activation or "linear")


def depthwise_conv2d_backward_data(dy, kernel, x_shape, strides=1, padding="valid", dilation_rate=1):
    """Gradient of depthwise_conv2d with respect to its input, of shape ``x_shape``."""
    op = "depthwise_conv2d_backward_data"
    dy, kernel = _array(dy, "dy", op), _array(kernel, "kernel", op)
    dx = _xp(dy).empty(tuple(x_shape), np.float32)
    kernels_for(dy, op).depthwise2d_bwd_data(dy, kernel, dx, *_geometry(op, strides, padding, dilation_rate))
    return dx


def depthwise_conv2d_backward_filter(dy, x, kernel_shape, strides=1, padding="valid", dilation_rate=1,
                                     need_dbias=True):
    """Gradients of depthwise_conv2d with respect to its kernel and bias: (dkernel, dbias); dbias is None
    when ``need_dbias`` is false."""
    op = "depthwise_conv2d_backward_filter"
    dy, x = _array(dy, "dy", op), _array(x, "x", op)
    xp = _xp(x)
    dkernel = xp.empty(tuple(kernel_shape), np.float32)
    dbias = xp.empty(int(np.prod(kernel_shape[2:])), np.float32) if need_dbias else None
    kernels_for(x, op).depthwise2d_bwd_filter(x, dy, dkernel, dbias, *_geometry(op, strides, padding, dilation_rate))
    return dkernel, dbias


def _pool_geometry(op, pool_size, strides, padding):
    pool = _pair(pool_size, "pool_size", op)
    return pool, pool if strides is None else _pair(strides, "strides", op), _padding(padding, op)


def max_pool2d_with_argmax(x, pool_size=2, strides=None, padding="valid"):
    """Max pooling that also returns, per output, the winning input position ih * W + iw (int32).

    Ties go to the first cell in row-major window order; NaN wins over numbers.
    """
    op = "max_pool2d"
    x = _array(x, "x", op)
    return kernels_for(x, op).max_pool2d_fwd(x, None, None, *_pool_geometry(op, pool_size, strides, padding), True)


def _max_pool2d_saving(needs, x, pool_size=2, strides=None, padding="valid"):
    y, argmax = max_pool2d_with_argmax(x, pool_size, strides, padding)
    return y, (argmax, tuple(x.shape))  # the argmax and x's shape, not x


def _max_pool2d_grad(saved, dy, needs, pool_size=2, strides=None, padding="valid"):
    argmax, x_shape = saved
    return (_max_pool2d_backward_from_argmax(dy, argmax, x_shape, pool_size, strides, padding),)  # its own argmax


@register("max_pool2d", inputs=("x",), grad=_max_pool2d_grad, forward_saving=_max_pool2d_saving)
def max_pool2d(x, pool_size=2, strides=None, padding="valid"):
    """Max pooling; ``strides`` defaults to ``pool_size``."""
    op = "max_pool2d"
    x = _array(x, "x", op)
    return kernels_for(x, op).max_pool2d_fwd(x, None, None, *_pool_geometry(op, pool_size, strides, padding))[0]


def max_pool2d_backward_from_argmax(dy, argmax, x_shape, pool_size=2, strides=None, padding="valid"):
    """Gradient of max pooling from the argmax saved by max_pool2d_with_argmax.

    An argmax holding an index outside its window raises ValueError (an extra pass over argmax in the
    kernels, which on the GPU waits for the device; layers pass the argmax they saved straight through)."""
    return _max_pool2d_backward_from_argmax(dy, argmax, x_shape, pool_size, strides, padding, check=True)


def _max_pool2d_backward_from_argmax(dy, argmax, x_shape, pool_size, strides, padding, check=False):
    """Unchecked, the CPU kernel still refuses indices outside the input (as PyTorch's does) and the GPU's
    gather ignores them."""
    op = "max_pool2d_backward"
    dy, argmax = _array(dy, "dy", op), _array(argmax, "argmax", op)
    dx = _xp(dy).empty(tuple(x_shape), np.float32)
    kernels_for(dy, op).max_pool2d_bwd(dy, argmax, dx, *_pool_geometry(op, pool_size, strides, padding), check)
    return dx


def max_pool2d_backward(dy, x, pool_size=2, strides=None, padding="valid"):
    """Gradient of max_pool2d with respect to x (the winner of each window takes dy)."""
    _, argmax = max_pool2d_with_argmax(x, pool_size, strides, padding)
    return max_pool2d_backward_from_argmax(dy, argmax, x.shape, pool_size, strides, padding)


def _shape_of_input(needs, inputs, y, *args, **kw):
    return tuple(inputs[0].shape)


def _avg_pool2d_grad(x_shape, dy, needs, pool_size=2, strides=None, padding="valid"):
    return (_avg_pool2d_backward(dy, x_shape, _pool_geometry("avg_pool2d", pool_size, strides, padding)),)


@register("avg_pool2d", inputs=("x",), grad=_avg_pool2d_grad, save=_shape_of_input)
def avg_pool2d(x, pool_size=2, strides=None, padding="valid"):
    """Average pooling; with 'same', padded cells do not count in the average (as in TensorFlow)."""
    op = "avg_pool2d"
    x = _array(x, "x", op)
    return kernels_for(x, op).avg_pool2d_fwd(x, None, *_pool_geometry(op, pool_size, strides, padding))


def avg_pool2d_backward(dy, x, pool_size=2, strides=None, padding="valid"):
    """Gradient of avg_pool2d with respect to x (only x's shape is used)."""
    op = "avg_pool2d_backward"
    return _avg_pool2d_backward(dy, _array(x, "x", op, 4).shape, _pool_geometry(op, pool_size, strides, padding))


def _avg_pool2d_backward(dy, x_shape, geometry):
    """avg_pool2d's gradient from x's shape alone (dx on dy's device)."""
    op = "avg_pool2d_backward"
    dy = _array(dy, "dy", op)
    dx = _xp(dy).empty(tuple(x_shape), np.float32)
    kernels_for(dy, op).avg_pool2d_bwd(dy, dx, *geometry)
    return dx


def _global_avg_pool2d_grad(x_shape, dy, needs):
    n, h, w, c = x_shape
    return (_avg_pool2d_backward(dy.reshape(n, 1, 1, c), x_shape, ((h, w), (h, w), "valid")),)


@register("global_avg_pool2d", inputs=("x",), grad=_global_avg_pool2d_grad, save=_shape_of_input)
def global_avg_pool2d(x):
    """Mean over H and W: (N, H, W, C) -> (N, C)."""
    x = _array(x, "x", "global_avg_pool2d", 4)
    n, h, w, c = x.shape
    return avg_pool2d(x, (h, w)).reshape(n, c)


def global_avg_pool2d_backward(dy, x):
    """Gradient of global_avg_pool2d: dy (N, C) spread evenly over each H x W plane."""
    op = "global_avg_pool2d_backward"
    x, dy = _array(x, "x", op, 4), _array(dy, "dy", op)
    n, h, w, c = x.shape
    if tuple(dy.shape) != (n, c):
        raise ValueError(f"{op}: dy has shape {tuple(dy.shape)}, expected {(n, c)}")
    return avg_pool2d_backward(dy.reshape(n, 1, 1, c), x, (h, w))


def _rows(a, name: str, op: str):
    """An (..., C) array as its C-contiguous (rows, C) view; lower ranks pass unchanged, for the kernels to
    refuse."""
    a = _array(a, name, op)
    return a.reshape(-1, a.shape[-1]) if a.ndim >= 2 else a


def _batch_norm_save(needs, inputs, outputs, epsilon=1e-3):
    _, xhat, _, _, inv = outputs
    return xhat, inv, inputs[1]


def _batch_norm_grad(saved, dy, needs, epsilon=1e-3):
    xhat, inv, gamma = saved
    dx, dgamma, dbeta = batch_norm_train_backward(dy, xhat, inv, gamma, need_dx=needs[0])
    return dx, dgamma, dbeta


@register("batch_norm_train", inputs=("x", "gamma", "beta"), grad=_batch_norm_grad, save=_batch_norm_save,
          multi_output=True)
def batch_norm_train(x, gamma=None, beta=None, epsilon=1e-3):
    """Batch normalisation over the last axis with the batch's own statistics (training mode).

    Returns ``(y, xhat, mean, var, inv)``: ``y = xhat * gamma + beta`` shaped like ``x``, the
    normalised input ``xhat = (x - mean) * inv`` as (rows, C), and the per-channel mean, biased
    variance and ``inv = 1 / sqrt(var + epsilon)``. ``gamma``/``beta`` None mean 1 and 0.
    """
    op = "batch_norm_train"
    x2 = _rows(x, "x", op)
    y, xhat, mean, var, inv = kernels_for(x2, op).batch_norm_fwd(
        x2, _optional(gamma, "gamma", op), _optional(beta, "beta", op), float(epsilon), None, None, None, None, None)
    return y.reshape(x.shape), xhat, mean, var, inv


def batch_norm_train_backward(dy, xhat, inv, gamma=None, need_dx=True):
    """Gradients of ``batch_norm_train`` from what it returned: ``(dx, dgamma, dbeta)``, dx shaped
    like ``dy`` (None when ``need_dx`` is false)."""
    op = "batch_norm_train_backward"
    dy2 = _rows(dy, "dy", op)
    xp, c = _xp(dy2), dy2.shape[-1] if dy2.ndim else 1
    dx = xp.empty(dy2.shape, np.float32) if need_dx else None
    dgamma, dbeta = xp.empty(c, np.float32), xp.empty(c, np.float32)
    kernels_for(dy2, op).batch_norm_bwd(dy2, _array(xhat, "xhat", op), _array(inv, "inv", op),
                                        _optional(gamma, "gamma", op), dx, dgamma, dbeta)
    return (None if dx is None else dx.reshape(dy.shape)), dgamma, dbeta


# The activations batch_norm_inference can apply on its way out: (kernel function, lo, hi).
_FUSED_ACTIVATIONS = {"relu": ("clamp", 0.0, np.inf), "relu6": ("clamp", 0.0, 6.0), "sigmoid": ("sigmoid", 0.0, 0.0),
                      "silu": ("silu", 0.0, 0.0), "swish": ("silu", 0.0, 0.0)}


def _batch_norm_inference_save(needs, inputs, y, mean, variance, epsilon=1e-3, activation=None):
    x, gamma, beta = inputs
    if activation is not None:  # the activation's gradient needs its input, recomputed from x
        return x, gamma, beta
    return (x if needs[1] else None), gamma, None


def _activation_grad(activation, z, dy):
    if activation == "sigmoid":
        s = sigmoid(z)
        return dy * s * (1 - s)
    if activation in ("silu", "swish"):
        return _silu_grad(z, dy, None)[0]
    return _relu_general_grad(z, dy, None, max_value=6.0 if activation == "relu6" else None)[0]


def _batch_norm_inference_grad(saved, dy, needs, mean, variance, epsilon=1e-3, activation=None):
    x, gamma, beta = saved
    if activation is not None:
        dy = _activation_grad(activation, batch_norm_inference(x, gamma, beta, mean, variance, epsilon), dy)
    xp, c = _xp(dy), dy.shape[-1]
    inv = (1.0 / xp.sqrt(variance.astype(np.float64) + epsilon)).astype(np.float32)
    dy2 = dy.reshape(-1, c)
    dx = dy * (inv * gamma if gamma is not None else inv) if needs[0] else None
    dgamma = (dy2 * ((x.reshape(-1, c) - mean) * inv)).sum(axis=0) if needs[1] else None
    return dx, dgamma, dy2.sum(axis=0) if needs[2] else None


@register("batch_norm_inference", inputs=("x", "gamma", "beta"), grad=_batch_norm_inference_grad,
          save=_batch_norm_inference_save)
def batch_norm_inference(x, gamma, beta, mean, variance, epsilon=1e-3, activation=None):
    """Batch normalisation over the last axis with given statistics (inference mode, a layer's moving ones):
    ``(x - mean) / sqrt(variance + epsilon) * gamma + beta``, shaped like ``x``; ``gamma``/``beta`` may be
    None (1 and 0). ``activation`` ('relu', 'relu6', 'sigmoid', 'silu' or 'swish') is applied to each block of
    the result while it is in cache, instead of in another pass over it."""
    op = "batch_norm_inference"
    if activation is not None and activation not in _FUSED_ACTIVATIONS:
        raise ValueError(f"{op}: activation must be None or one of {', '.join(_FUSED_ACTIVATIONS)}, "
                         f"got {activation!r}")
    fn, lo, hi = _FUSED_ACTIVATIONS.get(activation, (None, 0.0, 0.0))
    x2 = _rows(x, "x", op)
    y = kernels_for(x2, op).batch_norm_infer(x2, _array(mean, "mean", op), _array(variance, "variance", op),
                                             _optional(gamma, "gamma", op), _optional(beta, "beta", op),
                                             float(epsilon), None, fn, lo, hi)
    return y.reshape(x.shape)


def conv_batch_norm_inference(x, kernel, bias, gamma, beta, mean, variance, epsilon=1e-3, strides=1,
                              padding="valid", dilation_rate=1, depthwise=False, activation=None, residual=None):
    """Inference only: ``activation(batch_norm_inference(conv(x)) + residual)``, with conv ``conv2d`` (or
    ``depthwise_conv2d`` when ``depthwise``), in one pass over the output. The normalisation folds into the
    convolution (kernel * s and beta + (bias - mean) * s, s = gamma / sqrt(variance + epsilon) per output
    channel; conv2d's kernels scale the weights as they pack them, the depthwise kernel is scaled here); the
    residual (None, or an array shaped as the output: a residual block's shortcut) and the activation ('relu',
    'relu6', 'sigmoid', 'silu' or 'swish') are applied to each block of the output while it is in cache.
    Equal to the ops one by one up to float32 rounding. It has no gradient: while a GradientTape records it
    raises (train with the ops one by one)."""
    op = "conv_batch_norm_inference"
    if autodiff.recording():
        raise RuntimeError(f"{op} has no gradient and a GradientTape is recording; use conv2d and "
                           "batch_norm_inference (or the layers) one by one to train")
    if activation is not None and activation not in _FUSED_ACTIVATIONS:
        raise ValueError(f"{op}: activation must be None or one of {', '.join(_FUSED_ACTIVATIONS)}, "
                         f"got {activation!r}")
    kernel, bias, gamma, beta, mean, variance = (v.value if isinstance(v, autodiff.Variable) else v
                                                 for v in (kernel, bias, gamma, beta, mean, variance))
    x, kernel, geometry = _conv_args(op, x, kernel, strides, padding, dilation_rate)
    if kernel.ndim != 4:
        raise ValueError(f"{op}: kernel must be 4-D, got shape {tuple(kernel.shape)}")
    channels = kernel.shape[-1] * (kernel.shape[-2] if depthwise else 1)
    for v, name in ((mean, "mean"), (variance, "variance"), (gamma, "gamma"), (beta, "beta"), (bias, "bias")):
        if v is not None and v.shape != (channels,):
            raise ValueError(f"{op}: {name} must have shape ({channels},) for a kernel of shape "
                             f"{tuple(kernel.shape)}, got {tuple(v.shape)}")
    if type(x) is np.ndarray:
        s, shift = _cpu.fold_batch_norm(mean, variance, gamma, beta, bias, float(epsilon))
    else:
        xp = _xp(x)
        s = (1.0 if gamma is None else gamma) / xp.sqrt(variance.astype(np.float64) + float(epsilon))
        shift = ((0.0 if bias is None else bias) - mean) * s + (0.0 if beta is None else beta)
        s, shift = s.astype(np.float32), shift.astype(np.float32)
    if residual is not None:
        shape_of = depthwise_conv2d_output_shape if depthwise else conv2d_output_shape
        residual = _residual(residual, shape_of(x.shape, kernel.shape, strides, padding, dilation_rate), x, op)
    k = kernels_for(x, op)
    if depthwise:  # its kernel takes no residual: then the sum and the activation in one pass after it
        act = activation if residual is None else None
        inside = act if act in ("relu", "relu6") else "linear"  # in the kernel's own epilogue; the rest after
        fn, lo, hi = _FUSED_ACTIVATIONS[act] if act and inside == "linear" else (None, 0.0, 0.0)
        y = k.depthwise2d_fwd(x, multiply(kernel, s.reshape(kernel.shape[-2:])), shift, None, *geometry, inside,
                              fn, lo, hi)
        if residual is None:
            return y
        return add(y, residual) if activation is None else add_activation(y, residual, activation)
    fn, lo, hi = _FUSED_ACTIVATIONS[activation] if activation and activation != "relu" else (None, 0.0, 0.0)
    return k.conv2d_fwd(x, kernel, shift, None, *geometry, activation == "relu", _precision(None, op), fn, lo, hi,
                        s, residual)


def _residual(r, want, x, op):
    """``r`` as a C-contiguous float32 array of x's kind, after checking that it has the output's shape
    ``want`` (a residual that broadcasts is the caller's add)."""
    r = r.value if isinstance(r, autodiff.Variable) else r
    if tuple(r.shape) != tuple(want):
        raise ValueError(f"{op}: residual must have the output's shape {tuple(want)}, got {tuple(r.shape)}")
    return _xp(x).ascontiguousarray(r, dtype=np.float32)


# -- differentiable math ------------------------------------------------------------------------------------
# Element-wise and shape ops on NumPy or CuPy arrays (any float dtype; Python scalars broadcast), each with
# its backward rule, so that any scalar built from them has a gradient under convkit.GradientTape.

def _unbroadcast(g, shape):
    """Sum ``g`` down to ``shape``, undoing NumPy broadcasting."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _shapes(needs, inputs, out):
    return tuple(getattr(a, "shape", ()) for a in inputs)


def _add_grad(shapes, dy, needs):
    return tuple(_unbroadcast(dy, s) if n else None for s, n in zip(shapes, needs))


@register("add", inputs=("a", "b"), grad=_add_grad, save=_shapes)
def add(a, b):
    """a + b, broadcasting."""
    y = _host_binary(a, b, "add")
    return a + b if y is None else y


def _subtract_grad(shapes, dy, needs):
    return (_unbroadcast(dy, shapes[0]) if needs[0] else None,
            _unbroadcast(negative(dy), shapes[1]) if needs[1] else None)


@register("subtract", inputs=("a", "b"), grad=_subtract_grad, save=_shapes)
def subtract(a, b):
    """a - b, broadcasting."""
    y = _host_binary(a, b, "subtract")
    return a - b if y is None else y


def _operands(needs, inputs, out):
    a, b = inputs
    return (b if needs[0] else None, a if needs[1] else None, getattr(a, "shape", ()), getattr(b, "shape", ()))


def _multiply_grad(saved, dy, needs):
    b, a, a_shape, b_shape = saved
    return (_unbroadcast(multiply(dy, b), a_shape) if needs[0] else None,
            _unbroadcast(multiply(dy, a), b_shape) if needs[1] else None)


@register("multiply", inputs=("a", "b"), grad=_multiply_grad, save=_operands)
def multiply(a, b):
    """a * b, broadcasting."""
    y = _host_binary(a, b, "multiply")
    return a * b if y is None else y


def _divide_grad(saved, dy, needs):
    (a, b), _ = saved
    return (_unbroadcast(divide(dy, b), getattr(a, "shape", ())) if needs[0] else None,
            _unbroadcast(negative(divide(multiply(dy, a), square(b))), getattr(b, "shape", ())) if needs[1] else None)


@register("divide", inputs=("a", "b"), grad=_divide_grad)
def divide(a, b):
    """a / b, broadcasting."""
    y = _host_binary(a, b, "divide")
    return a / b if y is None else y


@register("negative", inputs=("x",), grad=lambda saved, dy, needs: (-dy,), save=lambda *a: None)
def negative(x):
    """-x."""
    return -x


def _output(needs, inputs, out, *args, **kw):
    return out


def _input(needs, inputs, out, *args, **kw):
    return inputs[0]


@register("exp", inputs=("x",), grad=lambda y, dy, needs: (multiply(dy, y),), save=_output)
def exp(x):
    """e ** x."""
    return _xp(x).exp(x)


@register("log", inputs=("x",), grad=lambda x, dy, needs: (divide(dy, x),), save=_input)
def log(x):
    """Natural logarithm."""
    return _xp(x).log(x)


@register("sqrt", inputs=("x",), grad=lambda y, dy, needs: (divide(dy, multiply(y, 2)),), save=_output)
def sqrt(x):
    """Square root."""
    return _xp(x).sqrt(x)


@register("square", inputs=("x",), grad=lambda x, dy, needs: (multiply(dy, multiply(x, 2)),), save=_input)
def square(x):
    """x * x."""
    return x * x


@register("relu", inputs=("x",), grad=lambda y, dy, needs: (_relu_grad(dy, y),), save=_output)
def relu(x):
    """max(x, 0)."""
    y = _host_pointwise(x, "clamp", 0.0, np.inf)
    return _xp(x).maximum(x, 0) if y is None else y


@register("sigmoid", inputs=("x",), grad=lambda y, dy, needs: (dy * y * (1 - y),), save=_output)
def sigmoid(x):
    """1 / (1 + e ** -x), without overflow for large |x|."""
    xp = _xp(x)
    if x.dtype.kind != "f":
        x = x.astype(xp.float32)
    y = _host_pointwise(x, "sigmoid")
    if y is not None:
        return y
    # exp(min(x, 0)) / (1 + exp(-|x|)): 1 / (1 + e^-x) above 0, e^x / (1 + e^x) below, and exp never
    # overflows. In place, without a select: these arrays are whole feature maps, and NumPy's where is
    # ten times slower than exp.
    y = xp.minimum(x, x.dtype.type(0))
    xp.exp(y, out=y)
    e = xp.abs(x)
    xp.exp(xp.negative(e, out=e), out=e)
    e += x.dtype.type(1)
    y /= e
    return y


@register("tanh", inputs=("x",), grad=lambda y, dy, needs: (dy * (1 - y * y),), save=_output)
def tanh(x):
    """Hyperbolic tangent."""
    return _xp(x).tanh(x)


def _softmax_grad(y, dy, needs, axis=-1):
    return (y * (dy - (dy * y).sum(axis=axis, keepdims=True)),)


@register("softmax", inputs=("x",), grad=_softmax_grad, save=_output)
def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``."""
    e = _xp(x).exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def _matmul_grad(saved, dy, needs):
    (a, b), _ = saved
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError("matmul: gradients need operands of at least 2 dimensions")
    da = _unbroadcast(matmul(dy, swapaxes(b)), a.shape) if needs[0] else None
    db = _unbroadcast(matmul(swapaxes(a), dy), b.shape) if needs[1] else None
    return da, db


@register("matmul", inputs=("a", "b"), grad=_matmul_grad)
def matmul(a, b):
    """Matrix product a @ b (batched over leading dimensions)."""
    return _product(a, b)


def swapaxes(x, a1=-1, a2=-2):
    """x with two axes exchanged (the last two by default): a view."""
    axes = list(range(x.ndim))
    axes[a1], axes[a2] = axes[a2], axes[a1]
    return transpose(x, axes)


def _dense_save(needs, inputs, y, activation=None):
    x, kernel, _ = inputs
    return (x if needs[1] else None, kernel if needs[0] else None, y if activation == "relu" else None)


def _dense_grad(saved, dy, needs, activation=None):
    x, kernel, y = saved
    if y is not None:  # the fused ReLU
        dy = _relu_grad(dy, y)
    dy2 = dy.reshape(-1, dy.shape[-1])
    dx = _product(dy, kernel.T) if needs[0] else None
    dk = _product(x.reshape(-1, x.shape[-1]).T, dy2) if needs[1] else None
    db = dy2.sum(axis=0) if needs[2] else None
    return dx, dk, db


@register("dense", inputs=("x", "kernel", "bias"), grad=_dense_grad, save=_dense_save)
def dense(x, kernel, bias=None, activation=None):
    """``x @ kernel + bias`` over the last axis, kernel (in, units); ``activation`` None/'linear' or 'relu'
    (fused, in place)."""
    if activation not in (None, "linear", "relu"):
        raise ValueError(f"dense: fused activation must be None, 'linear' or 'relu', got {activation!r}")
    if x.shape[-1] != kernel.shape[0]:
        raise ValueError(f"dense: x has {x.shape[-1]} features but the kernel takes {kernel.shape[0]}")
    z = _product(x, kernel)
    if bias is not None:
        z += bias
    if activation == "relu":
        _xp(z).maximum(z, 0, out=z)
    return z


def _reduction_grad(saved, dy, needs, axis=None, keepdims=False):
    shape, count = saved
    if not keepdims and axis is not None:
        dy = _xp(dy).expand_dims(dy, axis)
    g = _xp(dy).broadcast_to(dy if count == 1 else dy / count, shape)
    return (g.astype(dy.dtype, copy=False),)


def _sum_save(needs, inputs, out, axis=None, keepdims=False):
    return tuple(inputs[0].shape), 1


def _mean_save(needs, inputs, out, axis=None, keepdims=False):
    shape = tuple(inputs[0].shape)
    axes = range(len(shape)) if axis is None else np.atleast_1d(axis)
    return shape, int(np.prod([shape[i] for i in axes]))


@register("sum", inputs=("x",), grad=_reduction_grad, save=_sum_save)
def sum(x, axis=None, keepdims=False):  # noqa: A001 (as in keras.ops)
    """Sum over ``axis`` (all axes when None)."""
    return x.sum(axis=axis, keepdims=keepdims)


@register("mean", inputs=("x",), grad=_reduction_grad, save=_mean_save)
def mean(x, axis=None, keepdims=False):
    """Mean over ``axis`` (all axes when None)."""
    return x.mean(axis=axis, keepdims=keepdims)


@register("reshape", inputs=("x",), grad=lambda shape, dy, needs, new_shape: (reshape(dy, shape),),
          save=lambda needs, inputs, out, new_shape: inputs[0].shape)
def reshape(x, new_shape):
    """x with a new shape (a view when possible); one dimension may be -1."""
    return x.reshape(new_shape)


def _transpose_grad(saved, dy, needs, axes=None):
    return (transpose(dy, None if axes is None else tuple(np.argsort(axes))),)


@register("transpose", inputs=("x",), grad=_transpose_grad, save=lambda *a, **k: None)
def transpose(x, axes=None):
    """x with its axes permuted (reversed when ``axes`` is None): a view."""
    return x.transpose(axes)


def _concatenate_grad(sizes, dy, needs, axis=-1):
    cuts = np.cumsum(sizes)[:-1].tolist()
    parts = _xp(dy).split(dy, cuts, axis=axis)
    return tuple(_xp(dy).ascontiguousarray(p) if n else None for p, n in zip(parts, needs))


@register("concatenate", inputs=("xs",), grad=_concatenate_grad, variadic=True,
          save=lambda needs, inputs, out, axis=-1: [a.shape[axis] for a in inputs])
def concatenate(xs, axis=-1):
    """Arrays joined along ``axis``."""
    return _xp(xs[0]).concatenate(xs, axis=axis)


# -- ops for layers: activations, elementwise extremes, padding and cropping --------------------------------
# Each computes in its input's dtype on NumPy or CuPy arrays; the rules are first order, from the input.

__all__ += ["relu_general", "relu6", "leaky_relu", "elu", "selu", "gelu", "softplus", "hard_sigmoid", "silu",
            "maximum", "minimum", "pad", "crop", "global_max_pool2d"]


def _relu_general_grad(x, dy, needs, negative_slope=0.0, max_value=None, threshold=0.0):
    inside = x > threshold
    if max_value is not None:
        inside &= x < max_value
    g = inside.astype(dy.dtype)
    if negative_slope:
        g += (x <= threshold).astype(dy.dtype) * dy.dtype.type(negative_slope)
    return (dy * g,)


@register("relu_general", inputs=("x",), grad=_relu_general_grad, save=_input)
def relu_general(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras's relu with all its arguments: ``x`` above ``threshold`` (clipped at ``max_value``),
    ``negative_slope * (x - threshold)`` at or below it."""
    xp = _xp(x)
    if threshold == 0 and not negative_slope:  # ReLU and ReLU6: one pass (two on CuPy), not four
        y = _host_pointwise(x, "clamp", 0.0, np.inf if max_value is None else float(max_value))
        if y is not None:
            return y
        y = xp.maximum(x, x.dtype.type(0))  # NaN stays NaN, as in Keras, PyTorch and the fused kernels
        return y if max_value is None else xp.minimum(y, x.dtype.type(max_value), out=y)
    t = x.dtype.type(threshold)
    y = xp.where(x > t, x if max_value is None else xp.minimum(x, x.dtype.type(max_value)), x.dtype.type(0))
    if negative_slope:
        y = y + xp.minimum(x - t, 0) * x.dtype.type(negative_slope)
    return y


def relu6(x):
    """min(max(x, 0), 6)."""
    return relu_general(x, max_value=6.0)


def leaky_relu(x, negative_slope=0.2):
    """x where positive, ``negative_slope * x`` elsewhere."""
    return relu_general(x, negative_slope=negative_slope)


def _elu_grad(x, dy, needs, alpha=1.0):
    xp = _xp(x)
    return (dy * xp.where(x > 0, x.dtype.type(1), x.dtype.type(alpha) * xp.exp(xp.minimum(x, 0))),)


@register("elu", inputs=("x",), grad=_elu_grad, save=_input)
def elu(x, alpha=1.0):
    """x where positive, ``alpha * (exp(x) - 1)`` elsewhere."""
    xp = _xp(x)
    return xp.where(x > 0, x, x.dtype.type(alpha) * xp.expm1(xp.minimum(x, 0)))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


@register("selu", inputs=("x",), grad=lambda x, dy, needs: (_elu_grad(x, dy, needs, _SELU_ALPHA)[0]
                                                              * x.dtype.type(_SELU_SCALE),), save=_input)
def selu(x):
    """Scaled ELU with the self-normalising constants (scale 1.0507..., alpha 1.6732...)."""
    return elu(x, _SELU_ALPHA) * x.dtype.type(_SELU_SCALE)


def _softplus_grad(x, dy, needs):
    return (dy * sigmoid(x),)


@register("softplus", inputs=("x",), grad=_softplus_grad, save=_input)
def softplus(x):
    """log(1 + exp(x)), without overflow for large x."""
    xp = _xp(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def _hard_sigmoid_grad(x, dy, needs):
    return (dy * ((x > -3) & (x < 3)).astype(dy.dtype) / dy.dtype.type(6),)


@register("hard_sigmoid", inputs=("x",), grad=_hard_sigmoid_grad, save=_input)
def hard_sigmoid(x):
    """relu6(x + 3) / 6: 0 below -3, 1 above 3, linear between."""
    return _xp(x).clip(x + x.dtype.type(3), 0, 6) / x.dtype.type(6)


def _silu_grad(x, dy, needs):
    s = sigmoid(x)
    return (dy * (s * (1 + x * (1 - s))),)


@register("silu", inputs=("x",), grad=_silu_grad, save=_input)
def silu(x):
    """x * sigmoid(x) (also called swish)."""
    y = _host_pointwise(x, "silu")
    if y is not None:
        return y
    y = sigmoid(x)
    y *= x
    return y


def _erfc(z):
    """The complementary error function in float64, relative error below 1.2e-7 everywhere (a Chebyshev fit,
    Numerical Recipes' erfcc); NumPy has no erf of its own."""
    xp = _xp(z)
    a = xp.abs(z)
    t = 1.0 / (1.0 + 0.5 * a)
    p = 0.17087277
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196,
              1.00002368, -1.26551223):
        p = c + t * p
    r = t * xp.exp(-a * a + p)
    return xp.where(z >= 0, r, 2.0 - r)


_SQRT_2_OVER_PI = 0.7978845608028654


def _gelu_grad(x, dy, needs, approximate=False):
    xp = _xp(x)
    x64 = x.astype(np.float64)
    if approximate:
        t = xp.tanh(_SQRT_2_OVER_PI * (x64 + 0.044715 * x64 ** 3))
        g = 0.5 * (1 + t) + 0.5 * x64 * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x64 * x64)
    else:
        g = 0.5 * _erfc(-x64 / np.sqrt(2)) + x64 * xp.exp(-0.5 * x64 * x64) / np.sqrt(2 * np.pi)
    return (dy * g.astype(dy.dtype),)


@register("gelu", inputs=("x",), grad=_gelu_grad, save=_input)
def gelu(x, approximate=False):
    """Gaussian error linear unit x * P(N(0, 1) <= x); ``approximate`` uses the tanh formula."""
    xp = _xp(x)
    x64 = x.astype(np.float64)
    if approximate:
        y = 0.5 * x64 * (1 + xp.tanh(_SQRT_2_OVER_PI * (x64 + 0.044715 * x64 ** 3)))
    else:
        y = 0.5 * x64 * _erfc(-x64 / np.sqrt(2))
    return y.astype(x.dtype)


def _extreme_grad(saved, dy, needs):
    """Maximum's and minimum's rule: the larger (smaller) operand takes dy; a tie splits it evenly."""
    a_wins, tie, a_shape, b_shape = saved
    half = dy * tie * dy.dtype.type(0.5)
    return (_unbroadcast(dy * a_wins + half, a_shape) if needs[0] else None,
            _unbroadcast(dy * ~(a_wins | tie) + half, b_shape) if needs[1] else None)


def _extreme_save(needs, inputs, out):
    a, b = inputs
    a_wins = a == out
    tie = a_wins & (b == out)
    return a_wins & ~tie, tie, getattr(a, "shape", ()), getattr(b, "shape", ())


@register("maximum", inputs=("a", "b"), grad=_extreme_grad, save=_extreme_save)
def maximum(a, b):
    """Elementwise larger of a and b, broadcasting."""
    return _xp(a).maximum(a, b)


@register("minimum", inputs=("a", "b"), grad=_extreme_grad, save=_extreme_save)
def minimum(a, b):
    """Elementwise smaller of a and b, broadcasting."""
    return _xp(a).minimum(a, b)


def _widths(widths, ndim: int, op: str):
    """Per-axis (before, after) amounts as a tuple of int pairs, checked."""
    try:
        out = tuple((int(b), int(a)) for b, a in widths)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: expected one (before, after) pair of ints per axis, got {widths!r}") from None
    if len(out) != ndim or any(v < 0 for p in out for v in p):
        raise ValueError(f"{op}: expected {ndim} (before, after) pairs of non-negative ints, got {widths!r}")
    return out


@register("pad", inputs=("x",), grad=lambda saved, dy, needs, widths: (crop(dy, saved),),
          save=lambda needs, inputs, out, widths: _widths(widths, inputs[0].ndim, "pad"))
def pad(x, widths):
    """``x`` with zeros added: ``widths`` holds (before, after) counts per axis."""
    widths = _widths(widths, x.ndim, "pad")
    if type(x) is np.ndarray and x.ndim == 4 and x.dtype == np.float32 and widths[0] == widths[3] == (0, 0):
        return _cpu.pad2d(x if x.flags.c_contiguous else np.ascontiguousarray(x), *widths[1], *widths[2])
    y = _xp(x).zeros(tuple(s + b + a for s, (b, a) in zip(x.shape, widths)), x.dtype)
    y[tuple(slice(b, b + s) for s, (b, _) in zip(x.shape, widths))] = x
    return y


@register("crop", inputs=("x",), grad=lambda saved, dy, needs, widths: (pad(dy, saved),),
          save=lambda needs, inputs, out, widths: _widths(widths, inputs[0].ndim, "crop"))
def crop(x, widths):
    """``x`` less (before, after) cells per axis (a contiguous copy)."""
    widths = _widths(widths, x.ndim, "crop")
    if any(b + a >= s and (b or a) for s, (b, a) in zip(x.shape, widths)):
        raise ValueError(f"crop: cropping {widths} leaves nothing of an input of shape {tuple(x.shape)}")
    return _xp(x).ascontiguousarray(x[tuple(slice(b, s - a) for s, (b, a) in zip(x.shape, widths))])


def global_max_pool2d(x, keepdims=False):
    """Max over H and W: (N, H, W, C) -> (N, C), or (N, 1, 1, C) with ``keepdims``; recorded as a max pooling
    whose window is the whole image (the winner of each plane takes the gradient)."""
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"global_max_pool2d: x must be 4-D (N, H, W, C), got shape {tuple(getattr(x, 'shape', ()))}")
    n, h, w, c = x.shape
    y = max_pool2d(x, (h, w))
    return y if keepdims else reshape(y, (n, c))


# -- losses, penalties and user rules ---------------------------------------------------------------------

def _scaled(g, dy, needs, *args):
    """A saved gradient times the upstream one (a scalar)."""
    return (g * dy.astype(g.dtype, copy=False),)


def _loss_saving(needs, y_pred, loss, y_true):
    return loss.value_and_grad(y_true, y_pred)


@register("loss", inputs=("y_pred",), grad=_scaled, forward_saving=_loss_saving)
def _loss_op(y_pred, loss, y_true):
    return loss.value_and_grad(y_true, y_pred)[0]


def _fused_probabilities(logits, activation):
    return softmax(logits) if activation == "softmax" else sigmoid(logits)


def _activation_loss_saving(needs, logits, loss, y_true):
    return loss.fused_grad(y_true, _fused_probabilities(logits, loss.fused_activation))


@register("activation_loss", inputs=("logits",), grad=_scaled, forward_saving=_activation_loss_saving)
def activation_loss(logits, loss, y_true):
    """``loss`` of ``loss.fused_activation`` (softmax or sigmoid) of ``logits``, differentiated in one step
    as (p - y) / N, exact where the probabilities underflow."""
    return loss.fused_grad(y_true, _fused_probabilities(logits, loss.fused_activation))[0]


def loss(y_pred, loss, y_true):
    """The mean value of a convkit.losses.Loss for labels already in its format (Loss.prepare_labels).

    Recorded by a GradientTape; when ``y_pred`` is the softmax (sigmoid) that the loss fuses with, and the
    loss does not take logits, the recorded rule is the fused one from the logits (``activation_loss``).
    """
    from convkit import autodiff

    act = loss.fused_activation
    tapes = getattr(autodiff._local, "tapes", None)
    if tapes and act is not None and not getattr(loss, "from_logits", False):
        producers = [t.producer(y_pred) for t in tapes]
        if all(p is not None and p.op.name == act for p in producers):
            value, g = loss.fused_grad(y_true, y_pred)
            for t, p in zip(tapes, producers):
                t._append_keys(activation_loss.op, p.in_keys[:1], value, g, (loss, y_true))
            return value
    return _loss_op(y_pred, loss, y_true)


def _penalty_grad(x, dy, needs, regularizer):
    g = regularizer.grad(x)
    return (g * dy.astype(g.dtype, copy=False) if hasattr(dy, "astype") else g * dy,)


@register("penalty", inputs=("x",), grad=_penalty_grad, save=_input)
def penalty(x, regularizer):
    """A regulariser's value on ``x`` (e.g. convkit.regularizers.L2), differentiable."""
    return regularizer(x)


def _custom_saving(needs, xs, f):
    return f(*xs)


def _custom_grad(grad_fn, dy, needs, f):
    g = grad_fn(dy)
    return tuple(g) if isinstance(g, (tuple, list)) else (g,)


@register("custom_gradient", inputs=("xs",), grad=_custom_grad, forward_saving=_custom_saving, variadic=True)
def custom_gradient_call(xs, f):
    """``f(*xs)`` -> (y, grad_fn) recorded as one op whose rule is grad_fn (see convkit.custom_gradient)."""
    return f(*xs)[0]
