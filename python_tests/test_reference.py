"""The reference loops (csrc/ops/reference.cpp, convkit._cpu.reference): first against PyTorch in
float64, then the tuned kernels against them, on the CPU and (when present) the GPU, over shapes that
reach every CPU path. Pooling must agree bit for bit; convolution and batch normalisation within
float32 rounding of sums."""

import numpy as np
import pytest

import oracle
from convkit import _cpu, ops
from helpers import to_device, to_numpy

REF = _cpu.reference

# (x shape, kernel shape, strides, padding, dilation): first layers (1-3 channels, pixel-major and
# merged runs), deep small maps (run across images), whole-window kernels, 1-3 output channels
# (dot products), strides, dilations and odd sizes.
CONV_SHAPES = [
    ((2, 12, 12, 1), (5, 5, 1, 6), (1, 1), "same", (1, 1)),
    ((2, 10, 9, 3), (3, 3, 3, 16), (1, 1), "valid", (1, 1)),
    ((3, 4, 4, 8), (3, 3, 8, 12), (1, 1), "same", (1, 1)),
    ((24, 2, 2, 8), (3, 3, 8, 12), (1, 1), "same", (1, 1)),  # tiles across images pay only with many
    ((2, 5, 5, 16), (5, 5, 16, 20), (1, 1), "valid", (1, 1)),
    ((2, 9, 9, 12), (3, 3, 12, 2), (2, 2), "same", (1, 1)),
    ((1, 11, 7, 5), (3, 2, 5, 7), (2, 1), "same", (2, 1)),
    ((2, 8, 8, 40), (1, 1, 40, 24), (1, 1), "valid", (1, 1)),
    ((2, 11, 9, 512), (1, 1, 512, 20), (2, 2), "valid", (1, 1)),  # rows 2 KB apart: copied further apart
    ((1, 13, 13, 4), (3, 3, 4, 33), (1, 1), "same", (2, 2)),
]


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def conv_ref(x, w, b, dy, strides, padding, dilation, relu=False):
    """The reference module's forward and gradients: (y, dx, dw, db)."""
    y = np.empty(ops.conv2d_output_shape(x.shape, w.shape, strides, padding, dilation), np.float32)
    REF.conv2d_fwd(x, w, b, y, strides, dilation, padding, relu)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty(w.shape[3], np.float32)
    REF.conv2d_bwd_data(dy, w, dx, strides, dilation, padding)
    REF.conv2d_bwd_filter(x, dy, dw, db, strides, dilation, padding)
    return y, dx, dw, db


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
def test_reference_conv_matches_torch_float64(rng, shape):
    xs, ks, strides, padding, dilation = shape
    x, w, b = rand(rng, *xs), rand(rng, *ks), rand(rng, ks[3])
    dy = rand(rng, *ops.conv2d_output_shape(xs, ks, strides, padding, dilation))
    ours = conv_ref(x, w, b, dy, strides, padding, dilation, relu=True)
    dy_relu = dy * (ours[0] > 0)  # the reference's gradients are those of the convolution alone
    torch_y = oracle.conv2d(x, w, b, None, strides, padding, dilation, relu=True)
    torch_grads = oracle.conv2d(x, w, b, dy_relu, strides, padding, dilation)[1:]
    ours_grads = conv_ref(x, w, b, dy_relu, strides, padding, dilation)[1:]
    assert oracle.rel_err(ours[0], torch_y) < 1e-6
    for got, want in zip(ours_grads, torch_grads):
        assert oracle.rel_err(got, want) < 1e-6


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
def test_conv_kernels_match_the_reference(device, rng, shape):
    _check_conv(device, rng, shape)


def _check_conv(device, rng, shape):
    """conv2d forward (bias, ReLU) and both gradients on ``device`` against the reference loops."""
    xs, ks, strides, padding, dilation = shape
    x, w, b = rand(rng, *xs), rand(rng, *ks), rand(rng, ks[3])
    dy = rand(rng, *ops.conv2d_output_shape(xs, ks, strides, padding, dilation))
    want = conv_ref(x, w, b, dy, strides, padding, dilation, relu=True)
    dev = lambda a: to_device(a, device)  # noqa: E731
    y = ops.conv2d(dev(x), dev(w), dev(b), strides, padding, dilation, activation="relu")
    dx, dw, db = ops.conv2d_backward(dev(dy), dev(x), dev(w), strides, padding, dilation)
    # |terms| bound the rounding of each sum: float32 results lie within a few ulps of it
    bound = conv_ref(np.abs(x), np.abs(w), np.abs(b), np.abs(dy), strides, padding, dilation)
    for name, got, ref, size in zip(("y", "dx", "dw", "db"), (y, dx, dw, db), want, bound):
        assert oracle.sum_err(to_numpy(got), ref, size) < 1e-5, name


POOL_SHAPES = [((2, 6, 6, 3), (2, 2), (2, 2), "valid"), ((1, 7, 5, 9), (3, 3), (2, 2), "same"),
               ((2, 5, 8, 1), (2, 3), (1, 2), "valid"), ((1, 9, 9, 17), (3, 3), (1, 1), "same")]


@pytest.mark.parametrize("shape,pool,strides,padding", POOL_SHAPES)
def test_pooling_reference_against_torch_and_kernels_bit_for_bit(device, rng, shape, pool, strides, padding):
    x = rand(rng, *shape)
    x[0, 0, :2, 0] = 1.5  # a tie: the first cell wins
    out = ops.pool2d_output_shape(shape, pool, strides, padding)
    dy = rand(rng, *out)
    y, am, ya = np.empty(out, np.float32), np.empty(out, np.int32), np.empty(out, np.float32)
    REF.max_pool2d_fwd(x, y, am, pool, strides, padding)
    REF.avg_pool2d_fwd(x, ya, pool, strides, padding)
    dxm, dxa = np.empty_like(x), np.empty_like(x)
    REF.max_pool2d_bwd(dy, am, dxm, pool, strides, padding)
    REF.avg_pool2d_bwd(dy, dxa, pool, strides, padding)
    for ref, (ty, tdx) in [((y, dxm), oracle.max_pool2d(x, dy, pool, strides, padding)),
                           ((ya, dxa), oracle.avg_pool2d(x, dy, pool, strides, padding))]:
        assert oracle.rel_err(ref[0], ty) < 1e-6 and oracle.rel_err(ref[1], tdx) < 1e-6

    dev = lambda a: to_device(a, device)  # noqa: E731
    got_y, got_am = ops.max_pool2d_with_argmax(dev(x), pool, strides, padding)
    np.testing.assert_array_equal(to_numpy(got_y), y)
    np.testing.assert_array_equal(to_numpy(got_am), am)
    np.testing.assert_array_equal(to_numpy(ops.max_pool2d_backward_from_argmax(dev(dy), got_am, shape, pool, strides,
                                                                               padding)), dxm)
    np.testing.assert_array_equal(to_numpy(ops.avg_pool2d(dev(x), pool, strides, padding)), ya)
    np.testing.assert_array_equal(to_numpy(ops.avg_pool2d_backward(dev(dy), dev(x), pool, strides, padding)), dxa)


@pytest.mark.parametrize("m,c", [(6, 3), (37, 5), (300, 16), (2000, 40)])
def test_batch_norm_reference_against_torch_and_the_kernels(device, rng, m, c):
    """Training and inference. On the GPU, 300 rows run as one pass per block of channels and 2000 rows in
    splits whose partial sums add in a workspace."""
    import torch

    dev = lambda a: to_device(a, device)  # noqa: E731
    x, g, b, dy = rand(rng, m, c) * 3 + 10, rand(rng, c), rand(rng, c), rand(rng, m, c)
    y, xhat, mean, var, inv = REF.batch_norm_fwd(x, g, b, 1e-3, None, None, None, None, None)
    dx, dg, db = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
    REF.batch_norm_bwd(dy, xhat, inv, g, dx, dg, db)
    moving_mean, moving_var = rand(rng, c) + 10, np.abs(rand(rng, c)) + 0.5
    y_inference = REF.batch_norm_infer(x, moving_mean, moving_var, g, b, 1e-3, None)

    xt, gt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, g, b))
    ref = torch.nn.functional.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-3)
    ref.backward(torch.tensor(dy, dtype=torch.float64))
    ref_inference = torch.nn.functional.batch_norm(
        xt.detach(), *(torch.tensor(a, dtype=torch.float64) for a in (moving_mean, moving_var)), gt.detach(),
        bt.detach(), training=False, eps=1e-3)
    for got, want in [(y, ref), (dx, xt.grad), (dg, gt.grad), (db, bt.grad), (y_inference, ref_inference)]:
        assert oracle.rel_err(got, want.detach().numpy()) < 1e-5

    ky, kxhat, kmean, kvar, kinv = ops.batch_norm_train(dev(x), dev(g), dev(b), 1e-3)
    kdx, kdg, kdb = ops.batch_norm_train_backward(dev(dy), kxhat, kinv, dev(g))
    ky_inference = ops.batch_norm_inference(dev(x), dev(g), dev(b), dev(moving_mean), dev(moving_var), 1e-3)
    for got, want in [(ky, y), (kmean, mean), (kvar, var), (kinv, inv), (kdx, dx), (kdg, dg), (kdb, db),
                      (ky_inference, y_inference)]:
        assert oracle.rel_err(to_numpy(got), want) < 1e-5


STRATEGIES = ["direct", "by_position", "pixel_major", "dot", "rows", "filter_rows", "filter_gemm"]


def _runs():
    return dict(_cpu.conv_strategy_runs())


@pytest.fixture
def strategy():
    """Sets a forced CPU convolution strategy for one test, and 'auto' again after it."""
    yield _cpu.set_conv_strategy
    _cpu.set_conv_strategy("auto")


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_cpu_strategy_forced_matches_the_reference(rng, strategy, name):
    """Each CPU strategy of the convolution (a file of its own) forced on every shape it can compute."""
    strategy(name)
    assert _cpu.conv_strategy() == name
    before = _runs()[name]
    for shape in CONV_SHAPES:
        _check_conv("cpu", rng, shape)
    assert _runs()[name] > before, f"no call ran the {name} strategy"


def test_the_automatic_choice_reaches_every_strategy(rng):
    before = _runs()
    for shape in CONV_SHAPES:
        _check_conv("cpu", rng, shape)
    after = _runs()
    assert all(after[s] > before[s] for s in STRATEGIES), {s: after[s] - before[s] for s in STRATEGIES}


def test_the_strategy_switch_refuses_unknown_names_and_reads_the_environment(strategy):
    import subprocess
    import sys

    with pytest.raises(ValueError, match="unknown convolution strategy 'fastest'; known: auto, direct"):
        strategy("fastest")
    code = "import convkit._cpu as c; print(c.conv_strategy())"
    env = {**__import__("os").environ, "CONVKIT_CONV_STRATEGY": "pixel_major"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == "pixel_major", run.stderr[-2000:]
    env["CONVKIT_CONV_STRATEGY"] = "fastest"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "unknown convolution strategy 'fastest'" in run.stderr
