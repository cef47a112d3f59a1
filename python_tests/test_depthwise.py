"""Depthwise convolution (convkit.ops.depthwise_conv2d): the reference loops against PyTorch's grouped
convolution (groups = C) in float64, then the CPU kernels (each instruction set) and the GPU's against
the reference loops, over shapes that reach every code path: one and several vectors of channels with
masked tails, blocks of outputs, depth multipliers, strides, dilations, 'same' with even kernels, batch 1
and 0."""


import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import oracle  # noqa: E402
from convkit import _cpu, ops  # noqa: E402
from helpers import rerun_under_micro_kernel, to_device, to_numpy  # noqa: E402

REF = _cpu.reference

# (x shape, kernel shape (kh, kw, C, M), strides, padding, dilation)
SHAPES = [
    ((2, 9, 8, 5), (3, 3, 5, 1), (1, 1), "same", (1, 1)),
    ((1, 7, 7, 16), (3, 3, 16, 1), (2, 2), "same", (1, 1)),
    ((2, 8, 9, 37), (5, 5, 37, 1), (1, 1), "same", (1, 1)),
    ((1, 6, 7, 70), (4, 4, 70, 1), (2, 2), "same", (1, 1)),
    ((2, 10, 9, 3), (3, 3, 3, 2), (1, 1), "valid", (1, 1)),
    ((1, 11, 8, 6), (3, 2, 6, 3), (2, 1), "same", (2, 1)),
    ((2, 13, 13, 1), (3, 3, 1, 4), (1, 1), "same", (2, 2)),
    ((3, 5, 5, 33), (2, 2, 33, 2), (2, 2), "valid", (1, 1)),
    ((1, 1, 1, 8), (3, 3, 8, 1), (1, 1), "same", (1, 1)),
    # rows wide enough for the CPU kernels' blocks of 8 and 4 outputs: neighbouring taps one output
    # apart (stride 1, and stride 2 with dilation 2) and not (dilation 3)
    ((1, 5, 23, 20), (3, 3, 20, 1), (1, 1), "same", (1, 1)),
    ((2, 4, 21, 17), (5, 5, 17, 2), (1, 1), "same", (1, 1)),
    ((1, 6, 27, 9), (3, 3, 9, 1), (2, 2), "same", (2, 2)),
    ((1, 3, 18, 24), (3, 3, 24, 1), (1, 1), "same", (3, 3)),
]


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def out_shape(shape):
    xs, ks, strides, padding, dilation = shape
    return ops.depthwise_conv2d_output_shape(xs, ks, strides, padding, dilation)


def reference(x, w, b, dy, strides, padding, dilation, activation="linear"):
    """The reference loops' forward and gradients: (y, dx, dw, db)."""
    y = np.empty(ops.depthwise_conv2d_output_shape(x.shape, w.shape, strides, padding, dilation), np.float32)
    REF.depthwise2d_fwd(x, w, b, y, strides, dilation, padding, activation)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty(w.shape[2] * w.shape[3], np.float32)
    REF.depthwise2d_bwd_data(dy, w, dx, strides, dilation, padding)
    REF.depthwise2d_bwd_filter(x, dy, dw, db, strides, dilation, padding)
    return y, dx, dw, db


def torch_depthwise(x, w, b, dy, strides, padding, dilation):
    """PyTorch float64 groups=C convolution: (y, dx, dw, db) in convkit's layouts."""
    kh, kw, c, m = w.shape
    xt = torch.tensor(x.transpose(0, 3, 1, 2).astype(np.float64), requires_grad=True)
    wt = torch.tensor(w.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None].astype(np.float64), requires_grad=True)
    bt = torch.tensor(b.astype(np.float64), requires_grad=True)
    (pt, pb), (pl, pr) = (oracle.tf_pads(x.shape[i + 1], w.shape[i], strides[i], dilation[i], padding) for i in (0, 1))
    y = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wt, bt, stride=strides, dilation=dilation, groups=c).permute(0, 2, 3, 1)
    y.backward(torch.tensor(dy.astype(np.float64)))
    dw = wt.grad.numpy()[:, 0].transpose(1, 2, 0).reshape(kh, kw, c, m)
    return y.detach().numpy(), xt.grad.numpy().transpose(0, 2, 3, 1), dw, bt.grad.numpy()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_reference_matches_torch_float64(rng, shape):
    xs, ks, strides, padding, dilation = shape
    x, w, b = rand(rng, *xs), rand(rng, *ks), rand(rng, ks[2] * ks[3])
    dy = rand(rng, *out_shape(shape))
    ours = reference(x, w, b, dy, strides, padding, dilation)
    want = torch_depthwise(x, w, b, dy, strides, padding, dilation)
    for name, got, ref in zip(("y", "dx", "dw", "db"), ours, want):
        assert oracle.rel_err(got, ref) < 1e-6, name


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("activation", ["linear", "relu", "relu6"])
def test_kernels_match_the_reference(device, rng, shape, activation):
    xs, ks, strides, padding, dilation = shape
    x, w, b = rand(rng, *xs) * 3, rand(rng, *ks), rand(rng, ks[2] * ks[3])
    dy = rand(rng, *out_shape(shape))
    want = reference(x, w, b, dy, strides, padding, dilation, activation)
    bound = reference(np.abs(x), np.abs(w), np.abs(b), np.abs(dy), strides, padding, dilation)
    dev = lambda a: to_device(a, device)  # noqa: E731
    y = ops.depthwise_conv2d(dev(x), dev(w), dev(b), strides, padding, dilation, activation=activation)
    dx = ops.depthwise_conv2d_backward_data(dev(dy), dev(w), xs, strides, padding, dilation)
    dw, db = ops.depthwise_conv2d_backward_filter(dev(dy), dev(x), ks, strides, padding, dilation)
    for name, got, ref, size in zip(("y", "dx", "dw", "db"), (y, dx, dw, db), want, bound):
        assert oracle.sum_err(to_numpy(got), ref, size) < 1e-5, name


def test_empty_batch_gives_zero_gradients(device):
    x, w = np.zeros((0, 5, 5, 4), np.float32), np.ones((3, 3, 4, 2), np.float32)
    dev = lambda a: to_device(a, device)  # noqa: E731
    y = ops.depthwise_conv2d(dev(x), dev(w), padding="same")
    assert y.shape == (0, 5, 5, 8)
    dw, db = ops.depthwise_conv2d_backward_filter(dev(np.zeros((0, 5, 5, 8), np.float32)), dev(x), w.shape,
                                                  padding="same")
    assert not to_numpy(dw).any() and not to_numpy(db).any()


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_fused_activation_keeps_nan(device, activation):
    """As NumPy's and PyTorch's max and min, ReLU and ReLU6 fused into the kernel let NaN through."""
    x = np.ones((1, 5, 5, 20), np.float32) * 4
    x[0, 1, 1, 3] = np.nan
    w = np.ones((3, 3, 20, 1), np.float32)  # 9 * 4 = 36 > 6 everywhere else on the diagonal
    y = to_numpy(ops.depthwise_conv2d(to_device(x, device), to_device(w, device), padding="same",
                                      activation=activation))
    touched = np.zeros((5, 5), bool)
    touched[0:3, 0:3] = True
    assert np.isnan(y[0, touched, 3]).all() and not np.isnan(np.delete(y, 3, axis=-1)).any()
    assert (y[0, ~touched, 3] > 0).all() and (activation != "relu6" or y[~np.isnan(y)].max() == 6)


def test_backward_filter_is_the_same_on_any_thread_count(rng):
    x, dy = rand(rng, 4, 12, 12, 24), rand(rng, 4, 12, 12, 24)
    before = _cpu.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            _cpu.set_num_threads(n)
            dw, db = ops.depthwise_conv2d_backward_filter(dy, x, (3, 3, 24, 1), padding="same")
            results.append(dw)
    finally:
        _cpu.set_num_threads(before)
    want = reference(x, np.zeros((3, 3, 24, 1), np.float32), None, dy, (1, 1), "same", (1, 1))[2]
    for dw in results:
        assert oracle.rel_err(dw, want) < 1e-6


@pytest.mark.parametrize("kernel,name", [("avx2", "avx2-fma"), ("generic", "generic")])
def test_narrower_cpu_kernels(kernel, name, tmp_path):
    """CONVKIT_CPU_KERNEL forces a narrower instruction set: this file's checks run again, in a fresh
    process, on each of the others."""
    rerun_under_micro_kernel(__file__, kernel, name, "kernels_match and cpu and not narrower", tmp_path)

