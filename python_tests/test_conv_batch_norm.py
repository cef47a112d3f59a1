"""A convolution with the batch normalisation after it folded in and the activation after that applied to each
finished block (ops.conv_batch_norm_inference, what models run at inference): against PyTorch float64 doing
the three steps one by one (and a residual sum before the activation), on the CPU and on the GPU when there is
one; the CPU kernels' `scale`, `residual` and `then` against the reference loops under every strategy."""

import itertools

import numpy as np
import oracle
import pytest
import torch
import torch.nn.functional as F
from helpers import to_device, to_numpy

import convkit
from convkit import _cpu, ops

ACTIVATIONS = {None: lambda t: t, "relu": torch.relu, "relu6": lambda t: torch.clamp(t, 0, 6),
               "sigmoid": torch.sigmoid, "silu": F.silu, "swish": F.silu}
# (x shape, kernel shape, strides, padding): 3x3 and 1x1, strided, few channels, a depthwise multiplier
CONV = [((2, 9, 9, 16), (3, 3, 16, 40), (1, 1), "same"), ((3, 7, 7, 64), (1, 1, 64, 96), (1, 1), "same"),
        ((2, 12, 11, 3), (3, 3, 3, 8), (2, 2), "valid"), ((1, 4, 4, 24), (3, 3, 24, 20), (1, 1), "same")]
DEPTHWISE = [((2, 9, 9, 16), (3, 3, 16, 1), (1, 1), "same"), ((2, 13, 13, 40), (5, 5, 40, 1), (2, 2), "valid"),
             ((1, 6, 6, 8), (3, 3, 8, 2), (1, 1), "same")]


def _torch_reference(x, kernel, bias, gamma, beta, mean, var, eps, strides, padding, depthwise, activation,
                     residual=None):
    """act((conv(x) + bias - mean) / sqrt(var + eps) * gamma + beta + residual) in float64, NHWC."""
    t = lambda a: torch.from_numpy(np.asarray(a, np.float64))  # noqa: E731
    kh, kw, c, m = kernel.shape
    if depthwise:
        w = t(kernel.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None])
    else:
        w = t(kernel.transpose(3, 2, 0, 1))
    (pt, pb), (pl, pr) = (oracle.tf_pads(x.shape[i + 1], kernel.shape[i], strides[i], 1, padding) for i in (0, 1))
    z = F.conv2d(F.pad(t(x.transpose(0, 3, 1, 2)), (pl, pr, pt, pb)), w, None if bias is None else t(bias),
                 stride=strides, groups=c if depthwise else 1)
    z = F.batch_norm(z, t(mean), t(var), None if gamma is None else t(gamma), None if beta is None else t(beta),
                     False, 0.0, eps)
    if residual is not None:
        z = z + t(residual.transpose(0, 3, 1, 2))
    return ACTIVATIONS[activation](z).permute(0, 2, 3, 1).numpy()


def _operands(rng, x_shape, k_shape, depthwise, parts):
    channels = k_shape[2] * k_shape[3] if depthwise else k_shape[3]
    vec = lambda lo, hi: rng.uniform(lo, hi, channels).astype(np.float32)  # noqa: E731
    x = rng.standard_normal(x_shape).astype(np.float32)
    kernel = (rng.standard_normal(k_shape) / np.sqrt(np.prod(k_shape[:3]))).astype(np.float32)
    bias = vec(-1, 1) if "bias" in parts else None
    gamma = vec(0.2, 3) * rng.choice([-1, 1], channels).astype(np.float32) if "gamma" in parts else None
    beta = vec(-2, 2) if "beta" in parts else None
    return x, kernel, bias, gamma, beta, vec(-1, 1), vec(0.05, 4)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("depthwise,shape", [(False, s) for s in CONV] + [(True, s) for s in DEPTHWISE],
                         ids=[f"conv{i}" for i in range(len(CONV))] + [f"depthwise{i}" for i in range(len(DEPTHWISE))])
@pytest.mark.parametrize("parts", ["bias gamma beta", "gamma", "beta", ""])
def test_matches_pytorch_float64_one_step_at_a_time(rng, device, activation, depthwise, shape, parts):
    x_shape, k_shape, strides, padding = shape
    x, kernel, bias, gamma, beta, mean, var = _operands(rng, x_shape, k_shape, depthwise, parts)
    dev = lambda a: None if a is None else to_device(a, device)  # noqa: E731
    y = ops.conv_batch_norm_inference(dev(x), dev(kernel), dev(bias), dev(gamma), dev(beta), dev(mean), dev(var),
                                      1e-3, strides, padding, depthwise=depthwise, activation=activation)
    want = _torch_reference(x, kernel, bias, gamma, beta, mean, var, 1e-3, strides, padding, depthwise, activation)
    assert y.dtype == np.float32 and y.shape == want.shape
    assert oracle.rel_err(to_numpy(y), want) < 2e-6


@pytest.mark.parametrize("activation", [None, "relu", "silu"])
@pytest.mark.parametrize("depthwise,shape", [(False, s) for s in CONV] + [(True, DEPTHWISE[1])],
                         ids=[f"conv{i}" for i in range(len(CONV))] + ["depthwise"])
def test_a_residual_is_added_before_the_activation(rng, device, activation, depthwise, shape):
    """A residual block's end: the shortcut joins after the normalisation, before the activation."""
    x_shape, k_shape, strides, padding = shape
    x, kernel, bias, gamma, beta, mean, var = _operands(rng, x_shape, k_shape, depthwise, "bias gamma beta")
    out_shape = (ops.depthwise_conv2d_output_shape if depthwise else ops.conv2d_output_shape)(
        x_shape, k_shape, strides, padding)
    residual = rng.standard_normal(out_shape).astype(np.float32)
    dev = lambda a: to_device(a, device)  # noqa: E731
    y = ops.conv_batch_norm_inference(*map(dev, (x, kernel, bias, gamma, beta, mean, var)), 1e-3, strides, padding,
                                      depthwise=depthwise, activation=activation, residual=dev(residual))
    want = _torch_reference(x, kernel, bias, gamma, beta, mean, var, 1e-3, strides, padding, depthwise, activation,
                            residual)
    assert oracle.rel_err(to_numpy(y), want) < 2e-6


@pytest.mark.parametrize("strategy", ["auto", "direct", "by_position", "pixel_major", "dot", "rows"])
@pytest.mark.parametrize("then", [("silu", 0.0, 0.0), ("sigmoid", 0.0, 0.0), ("clamp", 0.0, 6.0), (None, 0.0, 0.0)],
                         ids=["silu", "sigmoid", "relu6", "none"])
def test_kernels_scale_and_then_match_the_reference_loops(rng, strategy, then):
    """Every strategy that can compute a shape scales its packed weights, adds the residual (when given) and
    applies the ReLU (when asked) and then `then` to its blocks."""
    shapes = CONV + [((2, 12, 12, 2), (3, 3, 2, 3), (1, 1), "same")]  # three filters: the dot strategy's
    _cpu.set_conv_strategy(strategy)
    try:
        for (x_shape, k_shape, strides, padding), relu, add in itertools.product(shapes, (False, True), (False, True)):
            x, kernel, bias, _, _, scale, _ = _operands(rng, x_shape, k_shape, False, "bias")
            out_shape = ops.conv2d_output_shape(x_shape, k_shape, strides, padding)
            residual = rng.standard_normal(out_shape).astype(np.float32) if add else None
            args = (x, kernel, bias, None, strides, (1, 1), padding, relu, False, *then, scale, residual)
            got, want = _cpu.conv2d_fwd(*args), _cpu.reference.conv2d_fwd(*args)
            assert oracle.rel_err(got, want) < 1e-6, (x_shape, k_shape, relu, add)
    finally:
        _cpu.set_conv_strategy("auto")


def test_depthwise_kernel_then_matches_the_reference_loops(rng):
    for x_shape, k_shape, strides, padding in DEPTHWISE:
        x, kernel, bias, *_ = _operands(rng, x_shape, k_shape, True, "bias")
        for then in (("silu", 0.0, 0.0), ("clamp", -1.0, 1.0)):
            args = (x, kernel, bias, None, strides, (1, 1), padding, "linear", *then)
            assert oracle.rel_err(_cpu.depthwise2d_fwd(*args), _cpu.reference.depthwise2d_fwd(*args)) < 1e-6


def _args(rng):
    x, kernel, bias, gamma, beta, mean, var = _operands(rng, (1, 5, 5, 4), (3, 3, 4, 6), False, "bias gamma beta")
    return dict(x=x, kernel=kernel, bias=bias, gamma=gamma, beta=beta, mean=mean, variance=var)


def test_a_recording_tape_is_refused(rng):
    with convkit.GradientTape(), pytest.raises(RuntimeError, match="has no gradient and a GradientTape is recording"):
        ops.conv_batch_norm_inference(**_args(rng))


@pytest.mark.parametrize("change,error,match", [
    (dict(activation="tanh"), ValueError, "activation must be None or one of relu, relu6, sigmoid, silu, swish"),
    (dict(mean=np.zeros(5, np.float32)), ValueError, r"mean must have shape \(6,\) for a kernel of shape \(3, 3, 4, 6\)"),
    (dict(gamma=np.ones(7, np.float32)), ValueError, r"gamma must have shape \(6,\)"),
    (dict(depthwise=True), ValueError, r"must have shape \(24,\) for a kernel of shape \(3, 3, 4, 6\)"),
    (dict(kernel=np.ones((3, 3, 4), np.float32)), ValueError, "kernel must be 4-D"),
    (dict(x=np.ones((1, 5, 5, 4))), TypeError, "x must be float32"),
    (dict(residual=np.ones((1, 5, 5, 6), np.float32)), ValueError,
     r"residual must have the output's shape \(1, 3, 3, 6\), got \(1, 5, 5, 6\)"),
], ids=["activation", "mean", "gamma", "depthwise-channels", "kernel-rank", "dtype", "residual"])
def test_bad_arguments_are_refused(rng, change, error, match):
    with pytest.raises(error, match=match):
        ops.conv_batch_norm_inference(**{**_args(rng), **change})


def test_kernel_arguments_are_checked(rng):
    x, kernel = np.ones((1, 5, 5, 4), np.float32), np.ones((3, 3, 4, 6), np.float32)
    with pytest.raises(ValueError, match=r"scale has shape \(5,\), expected \(6,\)"):
        _cpu.conv2d_fwd(x, kernel, None, None, (1, 1), (1, 1), "same", scale=np.ones(5, np.float32))
    with pytest.raises(ValueError, match="unknown function 'tanh'"):
        _cpu.conv2d_fwd(x, kernel, None, None, (1, 1), (1, 1), "same", then="tanh")
    y = np.ones((1, 5, 5, 6), np.float32)
    with pytest.raises(ValueError, match="y and residual overlap"):
        _cpu.conv2d_fwd(x, kernel, None, y, (1, 1), (1, 1), "same", residual=y)
    with pytest.raises(ValueError, match=r"residual has shape \(1, 5, 5, 4\), expected \(1, 5, 5, 6\)"):
        _cpu.conv2d_fwd(x, kernel, None, None, (1, 1), (1, 1), "same", residual=x)
    with pytest.raises(ValueError, match="unknown function 'gelu'"):
        _cpu.depthwise2d_fwd(x, kernel[..., :1], None, None, (1, 1), (1, 1), "same", then="gelu")
