"""Max, average and global average pooling, forward and backward, against PyTorch (float64)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oracle
import spec_shapes
from helpers import to_device, to_numpy

from convkit import _cpu, ops

TOL = 1e-5


def check_pool(device, rng, kind, x_shape, pool, strides, padding, tol=TOL):
    """Forward and dx of ours against the oracle; max pooling also through the saved-argmax path."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    dy = rng.standard_normal(ops.pool2d_output_shape(x_shape, pool, strides, padding)).astype(np.float32)
    ref = oracle.max_pool2d if kind == "max" else oracle.avg_pool2d
    ref_y, ref_dx = ref(x, dy, pool, strides, padding)
    X, DY = to_device(x, device), to_device(dy, device)
    if kind == "max":
        y = ops.max_pool2d(X, pool, strides, padding)
        dx = ops.max_pool2d_backward(DY, X, pool, strides, padding)
        y2, argmax = ops.max_pool2d_with_argmax(X, pool, strides, padding)
        dx2 = ops.max_pool2d_backward_from_argmax(DY, argmax, X.shape, pool, strides, padding)
        np.testing.assert_array_equal(to_numpy(y2), to_numpy(y))
        np.testing.assert_array_equal(to_numpy(dx2), to_numpy(dx))
    else:
        y = ops.avg_pool2d(X, pool, strides, padding)
        dx = ops.avg_pool2d_backward(DY, X, pool, strides, padding)
    assert oracle.rel_err(to_numpy(y), ref_y) < tol
    assert oracle.rel_err(to_numpy(dx), ref_dx) < tol


@pytest.mark.parametrize("model,batch,h,w,c,pool,stride,padding,kind", spec_shapes.POOL, ids=lambda v: str(v))
def test_spec_layers(device, rng, model, batch, h, w, c, pool, stride, padding, kind):
    check_pool(device, rng, kind, (min(batch, 3), h, w, c), (pool, pool), (stride, stride), padding)


EDGE = [
    # (x_shape, pool, strides, padding)
    ((1, 1, 1, 1), (1, 1), (1, 1), "valid"),
    ((2, 7, 9, 3), (2, 2), (2, 2), "same"),   # odd sizes: the last window hangs over bottom/right
    ((2, 7, 9, 3), (3, 3), (2, 2), "same"),   # overlapping windows
    ((2, 8, 8, 5), (3, 3), (1, 1), "same"),   # stride 1 'same': padding on both sides
    ((2, 9, 10, 2), (2, 3), (3, 2), "valid"), # non-square window and strides
    ((1, 10, 10, 4), (2, 2), (4, 4), "valid"),  # stride > window: skipped cells get no gradient
    ((1, 10, 10, 4), (2, 2), (4, 3), "same"),
    ((3, 5, 5, 17), (5, 5), (1, 1), "valid"),  # window as large as the input
    ((1, 6, 6, 1), (4, 4), (1, 1), "same"),    # even window, 'same' at stride 1
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("x_shape,pool,strides,padding", EDGE, ids=lambda v: str(v))
def test_edge_shapes(device, rng, kind, x_shape, pool, strides, padding):
    check_pool(device, rng, kind, x_shape, pool, strides, padding)


def test_worked_example_from_the_notes(device):
    x = to_device(np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1), device)
    np.testing.assert_array_equal(to_numpy(ops.max_pool2d(x, 2)).reshape(2, 2), [[6, 8], [14, 16]])
    np.testing.assert_array_equal(to_numpy(ops.avg_pool2d(x, 2)).reshape(2, 2), [[3.5, 5.5], [11.5, 13.5]])


def test_max_pool_ties_go_to_the_first_cell_in_row_major_order(device):
    x = np.zeros((1, 4, 4, 2), np.float32)
    x[0, :2, :2, 0] = 5.0                    # all four cells of the first window tie
    x[0, 2, 3, 1] = x[0, 3, 2, 1] = 7.0      # two of the last window tie: (2, 3) comes first
    X = to_device(x, device)
    y, argmax = ops.max_pool2d_with_argmax(X, 2)
    assert to_numpy(argmax)[0, 0, 0, 0] == 0
    assert to_numpy(argmax)[0, 1, 1, 1] == 2 * 4 + 3
    dx = to_numpy(ops.max_pool2d_backward(to_device(np.ones((1, 2, 2, 2), np.float32), device), X, 2))
    assert dx[0, 0, 0, 0] == 1 and dx[0, :2, :2, 0].sum() == 1
    assert dx[0, 2, 3, 1] == 1 and dx[0, 3, 2, 1] == 0


def test_max_pool_nan_wins(device):
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    x[0, 1, 0, 0] = np.nan
    y = to_numpy(ops.max_pool2d(to_device(x, device), 2))
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 0])


def test_small_integers_are_exact(device, rng):
    x = rng.integers(-8, 9, (2, 9, 7, 6)).astype(np.float32)
    dy = rng.integers(-8, 9, (2, 5, 4, 6)).astype(np.float32)
    X, DY = to_device(x, device), to_device(dy, device)
    y, dx = oracle.max_pool2d(x, dy, (2, 2), (2, 2), "same")
    np.testing.assert_array_equal(to_numpy(ops.max_pool2d(X, 2, padding="same")), y)
    # With ties between integers the oracle and ours may pick different cells; compare only sums per window.
    ours_dx = to_numpy(ops.max_pool2d_backward(DY, X, 2, padding="same"))
    assert ours_dx.sum() == dx.sum()
    # Windows of 2 x 4 cells: sums of small integers divided by 8 are exact in float32.
    xa = np.ascontiguousarray(x[:, :8, :4])
    y, _ = oracle.avg_pool2d(xa, np.zeros((2, 4, 1, 6)), (2, 4), (2, 4), "valid")
    np.testing.assert_array_equal(to_numpy(ops.avg_pool2d(to_device(xa, device), (2, 4))), y)


def test_global_avg_pool(device, rng):
    x = rng.standard_normal((3, 5, 7, 4)).astype(np.float32)
    dy = rng.standard_normal((3, 4)).astype(np.float32)
    X = to_device(x, device)
    y = to_numpy(ops.global_avg_pool2d(X))
    assert y.shape == (3, 4)
    assert oracle.rel_err(y, x.astype(np.float64).mean(axis=(1, 2))) < TOL
    dx = to_numpy(ops.global_avg_pool2d_backward(to_device(dy, device), X))
    assert oracle.rel_err(dx, np.broadcast_to(dy[:, None, None, :] / 35.0, x.shape)) < TOL


def test_empty_batch(device):
    x = to_device(np.zeros((0, 6, 6, 3), np.float32), device)
    for f in (ops.max_pool2d, ops.avg_pool2d):
        assert f(x, 2).shape == (0, 3, 3, 3)
    assert ops.max_pool2d_backward(to_device(np.zeros((0, 3, 3, 3), np.float32), device), x, 2).shape == x.shape


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 3), h=st.integers(1, 11), w=st.integers(1, 11), c=st.integers(1, 9),
       ph=st.integers(1, 4), pw=st.integers(1, 4), sh=st.integers(1, 4), sw=st.integers(1, 4),
       padding=st.sampled_from(["valid", "same"]), kind=st.sampled_from(["max", "avg"]),
       seed=st.integers(0, 2**32 - 1))
def test_hypothesis_shapes(device, n, h, w, c, ph, pw, sh, sw, padding, kind, seed):
    if padding == "valid" and (ph > h or pw > w):
        with pytest.raises(ValueError, match="larger than the input"):
            ops.max_pool2d(to_device(np.ones((n, h, w, c), np.float32), device), (ph, pw), (sh, sw), padding)
        return
    check_pool(device, np.random.default_rng(seed), kind, (n, h, w, c), (ph, pw), (sh, sw), padding)


def test_windows_strides_and_padding_past_32_bits(device, rng):
    """A window wider than 2^32 ('same' pads it by as much) covers the whole input from every output."""
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    big = 2**32 + 1
    X = to_device(x, device)
    y = to_numpy(ops.max_pool2d(X, big, 1, "same"))
    np.testing.assert_array_equal(y, np.broadcast_to(x.max(axis=(1, 2), keepdims=True), x.shape))
    np.testing.assert_allclose(to_numpy(ops.avg_pool2d(X, big, 1, "same")),
                               np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape), rtol=1e-6)
    dx = to_numpy(ops.max_pool2d_backward(to_device(np.ones_like(x), device), X, big, 1, "same"))
    np.testing.assert_array_equal(dx, np.where(x == x.max(axis=(1, 2), keepdims=True), 16.0, 0.0))


def _argmax_case(device, rng):
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    y, argmax = ops.max_pool2d_with_argmax(to_device(x, device), 2)
    return x, to_device(np.ones(y.shape, np.float32), device), to_numpy(argmax)


@pytest.mark.parametrize("corrupt", ["negative", "past the input", "another window"])
def test_argmax_outside_its_window_is_refused(device, rng, corrupt):
    x, dy, argmax = _argmax_case(device, rng)
    bad = argmax.copy()
    bad[1, 2, 0, 1] = {"negative": -1, "past the input": 36, "another window": 0}[corrupt]  # window starts at row 4
    with pytest.raises(ValueError, match="1 of 54 indices outside their pooling windows"):
        ops.max_pool2d_backward_from_argmax(dy, to_device(bad, device), x.shape, 2)
    ops.max_pool2d_backward_from_argmax(dy, to_device(argmax, device), x.shape, 2)  # the real one passes


def _outside_by_loops(argmax, x_shape, pool, strides, padding):
    """The window check written as loops over every output, from the padding ops.pool2d_output_shape implies."""
    n, h, w, c = x_shape
    oh, ow = argmax.shape[1:3]
    pads = [max((o - 1) * s + k - size, 0) // 2 if padding == "same" else 0
            for o, s, k, size in ((oh, strides[0], pool[0], h), (ow, strides[1], pool[1], w))]
    count = 0
    for b, i, j, ch in np.ndindex(*argmax.shape):
        cell = int(argmax[b, i, j, ch])
        r0, c0 = i * strides[0] - pads[0], j * strides[1] - pads[1]
        r, col = divmod(cell, w) if cell >= 0 else (-1, -1)
        count += not (0 <= cell < h * w and r0 <= r < r0 + pool[0] and c0 <= col < c0 + pool[1])
    return count


def test_argmax_window_checks_against_loops(device, rng):
    """The kernels' window check (the CPU's, the GPU's and the reference loops') counts what loops over every
    output count."""
    for padding, pool, strides in (("valid", (2, 2), (2, 2)), ("same", (3, 2), (2, 1)), ("same", (4, 4), (1, 3))):
        x = rng.standard_normal((2, 7, 5, 2)).astype(np.float32)
        _, argmax = ops.max_pool2d_with_argmax(to_device(x, device), pool, strides, padding)
        argmax = to_numpy(argmax)
        dy = np.ones(argmax.shape, np.float32)
        ops.max_pool2d_backward_from_argmax(to_device(dy, device), to_device(argmax, device), x.shape, pool, strides,
                                            padding)  # the true argmax passes
        bad = np.where(rng.random(argmax.shape) < 0.3, rng.integers(-3, 40, argmax.shape), argmax).astype(np.int32)
        counted = _outside_by_loops(bad, x.shape, pool, strides, padding)
        assert counted > 0
        with pytest.raises(ValueError, match=f"argmax holds {counted} of {bad.size} indices outside their pooling"):
            ops.max_pool2d_backward_from_argmax(to_device(dy, device), to_device(bad, device), x.shape, pool, strides,
                                                padding)
        with pytest.raises(ValueError, match=f"argmax holds {counted} of {bad.size} indices outside their pooling"):
            _cpu.reference.max_pool2d_bwd(dy, bad, np.empty(x.shape, np.float32), pool, strides, padding, True)


def test_the_cpu_kernel_itself_refuses_an_argmax_outside_the_input(rng):
    """The layers' path (no window check in Python) still never follows an index off the input."""
    x, dy, argmax = _argmax_case("cpu", rng)
    for cell in (36, -1):
        bad = argmax.copy()
        bad[1, 2, 0, 1] = cell
        with pytest.raises(ValueError, match="1 of 54 indices outside the input"):
            ops._max_pool2d_backward_from_argmax(dy, bad, x.shape, 2, None, "valid")


def test_argmax_may_be_non_contiguous_but_must_be_4d(device, rng):
    x, dy, argmax = _argmax_case(device, rng)
    want = to_numpy(ops.max_pool2d_backward_from_argmax(dy, to_device(argmax, device), x.shape, 2))
    strided = to_device(np.asfortranarray(argmax), device)
    np.testing.assert_array_equal(to_numpy(ops.max_pool2d_backward_from_argmax(dy, strided, x.shape, 2)), want)
    with pytest.raises(ValueError, match="argmax must be 4-D"):
        ops.max_pool2d_backward_from_argmax(dy, to_device(argmax[0], device), x.shape, 2)
