"""conv2d forward, backward-data and backward-filter against PyTorch (float64)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oracle
import spec_shapes
from helpers import to_device, to_numpy

from convkit import ops

TOL = 1e-5  # float32 kernels against the float64 reference, norm-wise


def check_conv(device, rng, x_shape, k_shape, strides=(1, 1), padding="valid", dilation=(1, 1), bias=True,
               relu=False, tol=TOL):
    """One call: forward and all three gradients of ours against the oracle on fresh random data."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(k_shape).astype(np.float32)
    b = rng.standard_normal(k_shape[3]).astype(np.float32) if bias else None
    out_shape = ops.conv2d_output_shape(x_shape, k_shape, strides, padding, dilation)
    dy = rng.standard_normal(out_shape).astype(np.float32)
    ref_y, ref_dx, ref_dw, ref_db = oracle.conv2d(x, w, b, dy, strides, padding, dilation, relu)
    # The same sums over absolute values: the scale of float32 error where a sum cancels.
    abs_y, abs_dx, abs_dw, _ = oracle.conv2d(np.abs(x), np.abs(w), None if b is None else np.abs(b), np.abs(dy),
                                             strides, padding, dilation, False)

    X, Wt, B, DY = (None if a is None else to_device(a, device) for a in (x, w, b, dy))
    y = ops.conv2d(X, Wt, B, strides, padding, dilation, activation="relu" if relu else None)
    assert oracle.sum_err(to_numpy(y), ref_y, abs_y) < tol
    if relu:  # gradients of the fused op are checked through the plain one
        return
    dx, dw, db = ops.conv2d_backward(DY, X, Wt, strides, padding, dilation)
    assert oracle.sum_err(to_numpy(dx), ref_dx, abs_dx) < tol
    assert oracle.sum_err(to_numpy(dw), ref_dw, abs_dw) < tol
    dy64 = dy.astype(np.float64)
    assert oracle.sum_err(to_numpy(db), dy64.sum(axis=(0, 1, 2)), np.abs(dy64).sum(axis=(0, 1, 2))) < tol


@pytest.mark.parametrize("model,batch,h,w,c,k,ks,padding", spec_shapes.CONV, ids=lambda v: str(v))
def test_spec_layers(device, rng, model, batch, h, w, c, k, ks, padding):
    check_conv(device, rng, (min(batch, 3), h, w, c), (ks, ks, c, k), padding=padding)


EDGE = [
    # (x_shape, kernel_shape, strides, padding, dilation)
    ((1, 1, 1, 1), (1, 1, 1, 1), (1, 1), "valid", (1, 1)),       # 1x1 everything
    ((1, 7, 5, 1), (1, 1, 1, 3), (1, 1), "same", (1, 1)),        # 1x1 kernel, N=1, C=1
    ((2, 9, 9, 2), (2, 2, 2, 3), (1, 1), "same", (1, 1)),        # even kernel, 'same' pads bottom/right
    ((2, 8, 10, 3), (4, 2, 3, 5), (1, 1), "same", (1, 1)),       # even, non-square kernel
    ((2, 11, 13, 3), (3, 3, 3, 4), (2, 2), "same", (1, 1)),      # stride 2, odd sizes, 'same'
    ((2, 11, 13, 3), (3, 3, 3, 4), (2, 3), "valid", (1, 1)),     # unequal strides
    ((2, 10, 10, 2), (2, 2, 2, 3), (3, 3), "valid", (1, 1)),     # stride > kernel: skipped pixels get no gradient
    ((2, 10, 10, 2), (1, 1, 2, 3), (4, 4), "same", (1, 1)),      # stride > kernel with 'same'
    ((2, 12, 12, 3), (3, 3, 3, 2), (1, 1), "same", (2, 2)),      # dilation
    ((1, 9, 11, 2), (3, 2, 2, 2), (2, 1), "valid", (2, 3)),      # dilation and stride together
    ((3, 5, 5, 7), (5, 5, 7, 9), (1, 1), "valid", (1, 1)),       # kernel as large as the input
    ((4, 4, 6, 12), (4, 6, 12, 9), (4, 6), "same", (1, 1)),      # the same with strides and 'same' (a GEMM)
    ((2, 3, 3, 2), (3, 3, 2, 7), (1, 1), "valid", (1, 1)),       # ... with few filters and channels
    ((2, 6, 6, 40), (3, 3, 40, 37), (1, 1), "same", (1, 1)),     # ragged tiles in every GEMM dimension
    ((1, 3, 3, 300), (3, 3, 300, 20), (1, 1), "same", (1, 1)),   # reduction longer than one cache block
]


@pytest.mark.parametrize("x_shape,k_shape,strides,padding,dilation", EDGE, ids=lambda v: str(v))
def test_edge_shapes(device, rng, x_shape, k_shape, strides, padding, dilation):
    check_conv(device, rng, x_shape, k_shape, strides, padding, dilation)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_fused_relu_and_no_bias(device, rng, padding):
    check_conv(device, rng, (2, 9, 9, 3), (3, 3, 3, 5), padding=padding, relu=True)
    check_conv(device, rng, (2, 9, 9, 3), (3, 3, 3, 5), padding=padding, bias=False)


def test_empty_batch(device):
    x = to_device(np.zeros((0, 8, 8, 3), np.float32), device)
    w = to_device(np.ones((3, 3, 3, 4), np.float32), device)
    y = ops.conv2d(x, w, padding="same")
    assert y.shape == (0, 8, 8, 4)
    dx, dw, db = ops.conv2d_backward(y, x, w, padding="same")
    assert dx.shape == (0, 8, 8, 3)
    assert not to_numpy(dw).any() and not to_numpy(db).any()


@pytest.mark.parametrize("padding,strides", [("same", (1, 1)), ("valid", (2, 1))])
def test_adjoint_identity(device, rng, padding, strides):
    """<conv(x, w), g> = <x, bwd_data(g, w)> = <w, bwd_filter(x, g)>."""
    x = rng.standard_normal((3, 10, 9, 4)).astype(np.float32)
    w = rng.standard_normal((3, 4, 4, 6)).astype(np.float32)
    g = rng.standard_normal(ops.conv2d_output_shape(x.shape, w.shape, strides, padding)).astype(np.float32)
    X, Wt, G = (to_device(a, device) for a in (x, w, g))
    y = to_numpy(ops.conv2d(X, Wt, strides=strides, padding=padding)).astype(np.float64)
    dx, dw, _ = (to_numpy(a).astype(np.float64) for a in ops.conv2d_backward(G, X, Wt, strides, padding))
    lhs = np.vdot(y, g)
    scale = np.vdot(np.abs(y), np.abs(g))  # the sum can cancel; judge the error against its terms
    assert abs(np.vdot(x, dx) - lhs) < 1e-5 * scale
    assert abs(np.vdot(w, dw) - lhs) < 1e-5 * scale


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_small_integers_are_exact(device, rng, padding):
    """Small integers make every sum exact in float32, so results must match bit for bit."""
    x = rng.integers(-3, 4, (2, 9, 8, 5)).astype(np.float32)
    w = rng.integers(-3, 4, (3, 3, 5, 7)).astype(np.float32)
    b = rng.integers(-3, 4, 7).astype(np.float32)
    dy = rng.integers(-3, 4, ops.conv2d_output_shape(x.shape, w.shape, 1, padding)).astype(np.float32)
    ref = oracle.conv2d(x, w, b, dy, (1, 1), padding, (1, 1))
    X, Wt, B, DY = (to_device(a, device) for a in (x, w, b, dy))
    ours = [ops.conv2d(X, Wt, B, padding=padding), *ops.conv2d_backward(DY, X, Wt, padding=padding)]
    for o, r in zip(ours, ref):
        np.testing.assert_array_equal(to_numpy(o), r)


# Channel counts up to 20 reach every CPU path: pixel-major (forward, c <= 3 and k <= 8), dot
# products (3 or fewer outputs from 4 or more source channels: forward with k <= 3, backward-data
# with c <= 3; a masked tail past 8 and 16 channels), and the direct tile with one and two
# column panels (k > 16).
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 3), h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 20), k=st.integers(1, 20),
       r=st.integers(1, 5), s=st.integers(1, 5), sh=st.integers(1, 3), sw=st.integers(1, 3),
       dh=st.integers(1, 2), dw=st.integers(1, 2), padding=st.sampled_from(["valid", "same"]),
       seed=st.integers(0, 2**32 - 1))
def test_hypothesis_shapes(device, n, h, w, c, k, r, s, sh, sw, dh, dw, padding, seed):
    """Any geometry either matches the oracle or is refused with a ValueError naming the window."""
    rng = np.random.default_rng(seed)
    too_big = padding == "valid" and ((r - 1) * dh + 1 > h or (s - 1) * dw + 1 > w)
    if too_big:
        with pytest.raises(ValueError, match="larger than the input"):
            ops.conv2d(to_device(np.ones((n, h, w, c), np.float32), device),
                       to_device(np.ones((r, s, c, k), np.float32), device), None, (sh, sw), padding, (dh, dw))
        return
    check_conv(device, rng, (n, h, w, c), (r, s, c, k), (sh, sw), padding, (dh, dw))


@pytest.mark.parametrize("kernel,name", [("avx2", "avx2-fma"), ("generic", "generic")])
def test_narrower_cpu_kernels(kernel, name, tmp_path):
    """The CPU runs the widest micro-kernels it has (AVX-512, AVX2, portable); CONVKIT_CPU_KERNEL forces a
    narrower set, so this file's checks run again, in a fresh process, on each of the others."""
    from helpers import rerun_under_micro_kernel

    rerun_under_micro_kernel(__file__, kernel, name, "not narrower_cpu_kernels and not cuda", tmp_path)


# Channel and filter counts that reach every CPU tile (pixel-major, the direct tile with one and
# two panels, small grids run across images) and the GPU's fused epilogues.
@pytest.mark.parametrize("c,k,hw", [(2, 3, 4), (8, 16, 4), (8, 40, 12), (5, 20, 13)])
def test_fused_relu_keeps_nan(device, c, k, hw):
    """ReLU fused into the kernel lets NaN through, as max(NaN, 0) does in NumPy and PyTorch."""
    x = np.ones((1, hw, hw, c), np.float32)
    x[0, 1, 1, 0] = np.nan
    w = -np.ones((3, 3, c, k), np.float32)  # negative sums elsewhere: ReLU zeroes them
    y = to_numpy(ops.conv2d(to_device(x, device), to_device(w, device), padding="same", activation="relu"))
    touched = np.zeros((hw, hw), bool)
    touched[0:3, 0:3] = True  # the outputs whose window holds the NaN
    assert np.isnan(y[0][touched]).all() and (y[0][~touched] == 0).all()
