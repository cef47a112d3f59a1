"""The CPU's element-wise activations (clamp for ReLU/ReLU6, sigmoid, silu) against PyTorch in float64 and
the reference loops, on fresh random inputs over float32's whole range, on every instruction set."""

import numpy as np
import oracle
import pytest
import torch
from helpers import rerun_under_micro_kernel

import convkit
from convkit import _cpu, ops

FUNCTIONS = {
    "sigmoid": torch.sigmoid,
    "silu": torch.nn.functional.silu,
    "clamp": lambda t: torch.clamp(t, 0, 6),
}
SPECIAL = np.float32([np.nan, np.inf, -np.inf, 0, -0.0, 1e-30, -1e-30, 6, 88, -87.2, 87.4, 15, -15, 100])


def _inputs(rng, n):
    """Normal values at three scales (small, activations', past the sigmoid's saturation) and the specials,
    in an order the vector loops do not align with."""
    x = np.concatenate([rng.standard_normal(n // 3) * s for s in (0.01, 3, 40)]).astype(np.float32)
    return rng.permutation(np.concatenate([x, SPECIAL]))


def _truth(fn, x):
    return FUNCTIONS[fn](torch.from_numpy(x.astype(np.float64))).numpy()


@pytest.mark.parametrize("fn", list(FUNCTIONS))
@pytest.mark.parametrize("module", ["kernel", "reference"])
def test_kernels_match_pytorch_float64_on_cpu(rng, fn, module):
    x = _inputs(rng, 100_003)
    run = _cpu.pointwise if module == "kernel" else _cpu.reference.pointwise
    y = run(x, fn, 0.0, 6.0)
    want = _truth(fn, x)
    assert y.dtype == np.float32 and y.shape == x.shape
    infinite = ~np.isfinite(want)  # NaN and the infinities exactly
    np.testing.assert_array_equal(y[infinite], want[infinite].astype(np.float32))
    # A few float32 roundings, plus one step of the subnormals (times |x| for silu's product) where the
    # sigmoid underflows into them.
    finite = ~infinite
    err = np.abs(y[finite] - want[finite])
    allowed = 4e-7 * np.abs(want[finite]) + 2.0**-149 * np.maximum(1, np.abs(x[finite]))
    worst = np.argmax(err / allowed)
    assert err[worst] <= allowed[worst], (fn, x[finite][worst], y[finite][worst], want[finite][worst])
    if fn == "clamp":
        np.testing.assert_array_equal(y[~np.isnan(y)], want[~np.isnan(want)].astype(np.float32))


def test_in_place_and_into_a_given_array(rng):
    x = _inputs(rng, 5_000)
    want = _cpu.pointwise(x, "silu")
    out = np.empty_like(x)
    assert _cpu.pointwise(x, "silu", y=out) is out
    np.testing.assert_array_equal(out, want)
    assert _cpu.pointwise(x, "silu", y=x) is x
    np.testing.assert_array_equal(x, want)
    grid = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    assert _cpu.pointwise(grid, "sigmoid").shape == (2, 3, 5, 7)


@pytest.mark.parametrize("bad,error,match", [
    (lambda x: _cpu.pointwise(x.astype(np.float64), "sigmoid"), TypeError, "pointwise: x must be float32"),
    (lambda x: _cpu.pointwise(x[::2], "sigmoid"), ValueError, "x must be C-contiguous"),
    (lambda x: _cpu.pointwise(x, "tanh"), ValueError, "unknown function 'tanh'; known: clamp, sigmoid, silu"),
    (lambda x: _cpu.pointwise(x, "silu", y=np.empty(3, np.float32)), ValueError, r"y has shape \(3,\), expected \(10,\)"),
], ids=["dtype", "strided", "name", "out-shape"])
def test_bad_arguments_are_refused(bad, error, match):
    with pytest.raises(error, match=match):
        bad(np.ones(10, np.float32))


@pytest.mark.parametrize("op,fn", [(ops.sigmoid, "sigmoid"), (ops.silu, "silu"), (ops.relu6, "clamp")])
def test_ops_take_the_kernel_for_float32_and_numpy_otherwise(rng, op, fn):
    """Contiguous float32 goes through the kernel; strided and float64 inputs through NumPy, alike."""
    x = _inputs(rng, 3_000)
    finite = np.isfinite(x)
    want = _truth(fn, x)
    np.testing.assert_array_equal(op(x), _cpu.pointwise(x, fn, 0.0, 6.0))
    for other in (op(np.repeat(x, 2)[::2]), op(x.astype(np.float64)).astype(np.float32)):
        assert oracle.rel_err(other[finite], want[finite]) < 1e-6


@pytest.mark.parametrize("kernel,name", [("avx2", "avx2-fma"), ("generic", "generic")])
def test_narrower_cpu_kernels(kernel, name, tmp_path):
    """The same checks on the narrower instruction sets, each in a fresh process."""
    rerun_under_micro_kernel(__file__, kernel, name, "match_pytorch and kernel", tmp_path)


# -- a op b with b repeated along a middle axis (squeeze-and-excitation products, residual sums) ------------
BINARY = {"add": torch.add, "subtract": torch.sub, "multiply": torch.mul, "divide": torch.div}
# (a's shape, b's shape, (outer, mid, inner)): the patterns the ops hand to the kernel
PATTERNS = [((3, 17, 19, 40), (3, 1, 1, 40), (3, 17 * 19, 40)), ((5, 11, 13, 7), (7,), (1, 5 * 11 * 13, 7)),
            ((4, 9, 9, 33), (4, 9, 9, 33), (1, 1, 4 * 9 * 9 * 33)), ((6, 10, 1, 20), (6, 1, 1, 20), (6, 10, 20))]


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("module", ["kernel", "reference"])
@pytest.mark.parametrize("shapes", PATTERNS, ids=["se", "channels", "equal", "one-column"])
def test_binary_kernels_match_pytorch_float64_on_cpu(rng, op, module, shapes):
    """One float32 rounding of the exact value, as float64 then float32 gives it: equal, bit for bit,
    specials (NaN, infinities, zeros) included."""
    a_shape, b_shape, (outer, mid, inner) = shapes
    a = rng.permutation(_inputs(rng, int(np.prod(a_shape))))[:int(np.prod(a_shape))].reshape(a_shape)
    b = rng.permutation(_inputs(rng, int(np.prod(b_shape))))[:int(np.prod(b_shape))].reshape(b_shape)
    run = _cpu.binary if module == "kernel" else _cpu.reference.binary
    with np.errstate(all="ignore"):
        y = run(a, b, op, outer, mid, inner)
    want = BINARY[op](torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b.astype(np.float64)))
    assert y.dtype == np.float32 and y.shape == a_shape
    np.testing.assert_array_equal(y, want.numpy().astype(np.float32))


@pytest.mark.parametrize("module", ["kernel", "reference"])
def test_relu_grad_kernels_match_pytorch(rng, module):
    """ReLU's backward as PyTorch's threshold_backward: 0 where the output is at most 0, else the gradient.
    Planted: NaN and infinite gradients behind closed units (y 0, -0.0, negative), NaN outputs; over 5 x 16K
    values, so that the kernel's parallel loop runs."""
    n = 100_000
    dy, y = _inputs(rng, n), rng.permutation(_inputs(rng, n))
    planted = [(np.nan, 0.0), (np.nan, -0.0), (np.inf, -1.0), (np.nan, 2.0), (3.0, np.nan), (-5.0, -0.0)]
    at = rng.choice(dy.size, len(planted), replace=False)
    dy[at], y[at] = np.float32(planted).T
    run = _cpu.binary if module == "kernel" else _cpu.reference.binary
    got = run(dy, y, "relu_grad", 1, 1, dy.size)
    want = torch.ops.aten.threshold_backward(torch.from_numpy(dy), torch.from_numpy(y), 0.0).numpy()
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(got[at], np.float32([0, 0, 0, np.nan, 3, 0]), equal_nan=True)


@pytest.mark.parametrize("shape", [(4, 30, 30, 16), (3, 5)], ids=["kernel", "numpy"])
def test_relu_gradient_matches_pytorch(rng, shape):
    """The ReLU op's gradient, through the kernel or NumPy's select, equals PyTorch's, NaN gradients included."""
    x, dy = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    dy.flat[::7] = np.nan
    with convkit.GradientTape() as tape:
        tape.watch(x)
        y = ops.relu(x)
    got = tape.gradient(y, x, output_gradients=dy)
    tx = torch.from_numpy(x).requires_grad_()
    torch.relu(tx).backward(torch.from_numpy(dy))
    assert (ops._host_binary(dy, x, "relu_grad") is not None) == (x.size > 1000)
    np.testing.assert_array_equal(got, tx.grad.numpy())


def test_binary_in_place(rng):
    a, b = rng.standard_normal((2, 8, 8, 16), dtype=np.float32), rng.standard_normal((2, 1, 1, 16), dtype=np.float32)
    want = a * b
    assert _cpu.binary(a, b, "multiply", 2, 64, 16, y=a) is a
    np.testing.assert_array_equal(a, want)


@pytest.mark.parametrize("bad,match", [
    (lambda a, b: _cpu.binary(a, b, "power", 2, 64, 16), "unknown operation 'power'; known: add, subtract, multiply"),
    (lambda a, b: _cpu.binary(a, b, "add", 2, 32, 16), "a must hold outer \\* mid \\* inner values and b outer "
                                                      "\\* inner, got 2048 and 32 for \\(2, 32, 16\\)"),
    (lambda a, b: _cpu.binary(a, b[:1], "add", 2, 64, 16), "got 2048 and 16"),
    (lambda a, b: _cpu.binary(a, b, "add", -2, -64, 16), "must not be negative"),
    (lambda a, b: _cpu.binary(a[:, ::2], b, "add", 2, 32, 16), "a must be C-contiguous"),
], ids=["name", "count", "b-count", "negative", "strided"])
def test_binary_bad_arguments_are_refused(rng, bad, match):
    a, b = np.ones((2, 8, 8, 16), np.float32), np.ones((2, 1, 1, 16), np.float32)
    with pytest.raises(ValueError, match=match):
        bad(a, b)


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("a_shape,b_shape", [((4, 30, 30, 64), (4, 1, 1, 64)), ((4, 1, 1, 64), (4, 30, 30, 64)),
                                             ((4, 30, 30, 64), (64,)), ((4, 30, 30, 64), (4, 30, 30, 64)),
                                             ((4, 30, 30, 64), (1, 30, 30, 1)), ((4, 30, 1, 64), (1, 1, 30, 64)),
                                             ((4, 30, 30, 64), (4, 30, 30, 1)), ((4, 30, 30, 64), ()),
                                             ((4, 64, 64, 3), (3,)), ((7, 31, 33, 5), (1, 1, 5))])
def test_ops_broadcast_as_numpy_through_the_kernel_or_not(rng, op, a_shape, b_shape):
    """Every broadcast gives NumPy's float32 result exactly, whichever path takes it; the patterns the kernel
    takes (large float32 operands, one repeated along one run of axes) do go through it."""
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = np.asarray(rng.standard_normal(b_shape) + 3, np.float32)  # a 0-d array for (): repeated everywhere
    want = getattr(np, op)(a, b)
    y = getattr(ops, op)(a, b)
    assert y.shape == want.shape and y.dtype == want.dtype
    np.testing.assert_array_equal(y, want)
    took = ops._host_binary(a, b, op) is not None
    commutes = op in ("add", "multiply") or a.size >= b.size
    assert took == (b_shape not in ((1, 30, 30, 1), (1, 1, 30, 64), (4, 30, 30, 1)) and commutes)


@pytest.mark.parametrize("activation", ["relu", "relu6", "sigmoid", "silu"])
@pytest.mark.parametrize("shapes", [((3, 20, 20, 64), (3, 20, 20, 64)), ((2, 3), (2, 3))], ids=["kernel", "numpy"])
def test_add_activation_matches_pytorch_float64(rng, activation, shapes):
    """A residual sum and its activation in one pass (or, below the kernel's size, the two ops)."""
    a, b = (rng.standard_normal(s).astype(np.float32) * 4 for s in shapes)
    want = {"relu": torch.relu, "relu6": lambda t: torch.clamp(t, 0, 6), "sigmoid": torch.sigmoid,
            "silu": torch.nn.functional.silu}[activation](torch.from_numpy(a.astype(np.float64) + b))
    y = ops.add_activation(a, b, activation)
    assert y.dtype == np.float32 and oracle.rel_err(y, want.numpy()) < 4e-7
    args = (a, b, "add", 1, 1, a.size, None, *ops._FUSED_ACTIVATIONS[activation])
    assert oracle.rel_err(_cpu.binary(*args), _cpu.reference.binary(*args)) < 4e-7


def test_add_activation_refuses_a_recording_tape_and_unknown_names():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="activation must be one of relu, relu6, sigmoid, silu, swish, got 'tanh'"):
        ops.add_activation(a, a, "tanh")
    import convkit

    with convkit.GradientTape(), pytest.raises(RuntimeError, match="add_activation has no gradient"):
        ops.add_activation(a, a, "relu")


@pytest.mark.parametrize("module", ["kernel", "reference"])
@pytest.mark.parametrize("pads", [(0, 1, 0, 1), (1, 2, 3, 0), (0, 0, 0, 0), (2, 2, 2, 2)], ids=str)
def test_pad2d_matches_numpy(rng, module, pads):
    """ZeroPadding2D's copy: exactly numpy.pad's zeros around each image (NaN and infinities copied as they are)."""
    x = rng.permutation(_inputs(rng, 3 * 17 * 19 * 33))[:3 * 17 * 19 * 33].reshape(3, 17, 19, 33)
    run = _cpu.pad2d if module == "kernel" else _cpu.reference.pad2d
    top, bottom, left, right = pads
    want = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    np.testing.assert_array_equal(run(x, *pads), want)
    np.testing.assert_array_equal(ops.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))), want)
    np.testing.assert_array_equal(ops.pad(x[:, ::2], ((0, 0), (top, bottom), (left, right), (0, 0))),
                                  np.pad(x[:, ::2], ((0, 0), (top, bottom), (left, right), (0, 0))))


def test_pad2d_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="pad2d: padding must not be negative"):
        _cpu.pad2d(np.ones((1, 2, 2, 1), np.float32), 0, -1, 0, 0)
    with pytest.raises(ValueError, match="pad2d: x must be 4-D"):
        _cpu.pad2d(np.ones((2, 2, 1), np.float32), 0, 1, 0, 0)
