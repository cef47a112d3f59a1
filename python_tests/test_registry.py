"""Walks the op registry: every registered op, forward against a PyTorch float64 reference, backward
(its rule, through convkit.GradientTape) against PyTorch float64 autograd, on the CPU and, when a GPU is
usable, on the GPU too, where results must also agree with the CPU's. An op registered without a case
here fails ``test_every_registered_op_has_a_rule_and_a_case``."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convkit
import oracle
from convkit import losses, ops, regularizers
from convkit.autodiff import registry, register
from convkit._device import to_numpy
from helpers import to_device


class Case:
    """``fn(*inputs, *attrs, **kw)`` against ``ref(*float64 tensors)``; ``inputs`` are the differentiable
    arguments (NumPy float32 here, moved to the device under test), ``attrs`` the rest."""

    def __init__(self, fn, inputs, ref, attrs=(), kw=None, out=None, tol=1e-5):
        self.fn, self.inputs, self.ref, self.attrs, self.kw = fn, inputs, ref, attrs, kw or {}
        self.out, self.tol = out, tol  # out: which item of a tuple result is differentiable


def _r(rng, *shape, low=None):
    a = rng.standard_normal(shape)
    if low is not None:  # away from a singularity (log, sqrt, 1/x)
        a = np.abs(a) + low
    return a.astype(np.float32)


def _nhwc_conv(x, k, b, strides, padding, dilation, relu):
    (pt, pb), (pl, pr) = (oracle.tf_pads(x.shape[i + 1], k.shape[i], strides[i], dilation[i], padding) for i in (0, 1))
    y = F.conv2d(F.pad(x.permute(0, 3, 1, 2), (pl, pr, pt, pb)), k.permute(3, 2, 0, 1), b, stride=strides,
                 dilation=dilation).permute(0, 2, 3, 1)
    return torch.relu(y) if relu else y


def _nhwc_pool(x, pool, strides, padding, kind):
    (pt, pb), (pl, pr) = (oracle.tf_pads(x.shape[i + 1], pool[i], strides[i], 1, padding) for i in (0, 1))
    xc = x.permute(0, 3, 1, 2)
    if kind == "max":
        y = F.max_pool2d(F.pad(xc, (pl, pr, pt, pb), value=-float("inf")), pool, strides)
    else:
        sums = F.avg_pool2d(F.pad(xc, (pl, pr, pt, pb)), pool, strides, divisor_override=1)
        ones = torch.ones((1, 1) + tuple(x.shape[1:3]), dtype=torch.float64)
        y = sums / F.avg_pool2d(F.pad(ones, (pl, pr, pt, pb)), pool, strides, divisor_override=1)
    return y.permute(0, 2, 3, 1)


def _conv_cases(rng):
    out = []
    for shape, k, strides, padding, dilation, act, bias in [
        ((2, 7, 7, 3), (3, 3, 3, 4), (1, 1), "same", (1, 1), "relu", True),
        ((2, 8, 6, 2), (3, 2, 2, 5), (2, 1), "valid", (1, 1), None, True),
        ((1, 9, 9, 4), (3, 3, 4, 3), (1, 1), "same", (2, 2), None, False),
        ((2, 6, 6, 1), (5, 5, 1, 6), (2, 2), "same", (1, 1), "relu", True),
    ]:
        inputs = [_r(rng, *shape), _r(rng, *k) * 0.5] + ([_r(rng, k[3])] if bias else [])
        kw = dict(strides=strides, padding=padding, dilation_rate=dilation, activation=act)
        fn = ops.conv2d if bias else (lambda x, w, **kw: ops.conv2d(x, w, None, **kw))
        ref = (lambda x, w, b=None, s=strides, p=padding, d=dilation, a=act:
               _nhwc_conv(x, w, b, s, p, d, a == "relu"))
        out.append(Case(fn, inputs, ref, kw=kw))
    return out


def _nhwc_depthwise(x, k, b, strides, padding, dilation, act):
    """PyTorch's grouped convolution (groups = C): Keras's channel order c * M + m is PyTorch's too."""
    (pt, pb), (pl, pr) = (oracle.tf_pads(x.shape[i + 1], k.shape[i], strides[i], dilation[i], padding) for i in (0, 1))
    kh, kw, c, m = k.shape
    y = F.conv2d(F.pad(x.permute(0, 3, 1, 2), (pl, pr, pt, pb)), k.reshape(kh, kw, c * m, 1).permute(2, 3, 0, 1), b,
                 stride=strides, dilation=dilation, groups=c).permute(0, 2, 3, 1)
    return {None: y, "relu": torch.relu(y), "relu6": torch.clamp(y, 0, 6)}[act]


def _depthwise_cases(rng):
    out = []
    for shape, k, strides, padding, dilation, act, bias in [
        ((2, 7, 7, 3), (3, 3, 3, 1), (1, 1), "same", (1, 1), "relu", True),
        ((2, 8, 6, 2), (3, 2, 2, 2), (2, 1), "valid", (1, 1), None, True),
        ((1, 9, 9, 5), (3, 3, 5, 1), (1, 1), "same", (2, 2), None, False),
        ((2, 6, 7, 4), (4, 4, 4, 3), (2, 2), "same", (1, 1), "relu6", True),
    ]:
        scale = 3 if act == "relu6" else 1  # outputs on both sides of 6
        inputs = [_r(rng, *shape) * scale, _r(rng, *k)] + ([_r(rng, k[2] * k[3])] if bias else [])
        kw = dict(strides=strides, padding=padding, dilation_rate=dilation, activation=act)
        fn = ops.depthwise_conv2d if bias else (lambda x, w, **kw: ops.depthwise_conv2d(x, w, None, **kw))
        ref = (lambda x, w, b=None, s=strides, p=padding, d=dilation, a=act: _nhwc_depthwise(x, w, b, s, p, d, a))
        out.append(Case(fn, inputs, ref, kw=kw))
    return out


def _pool_cases(rng, fn, kind):
    return [Case(fn, [_r(rng, *shape)], lambda x, pool=pool, s=s, p=p: _nhwc_pool(x, pool, s, p, kind),
                 kw=dict(pool_size=pool, strides=s, padding=p))
            for shape, pool, s, p in [((2, 6, 6, 3), (2, 2), (2, 2), "valid"), ((1, 7, 5, 2), (3, 3), (2, 2), "same"),
                                      ((2, 5, 5, 1), (2, 3), (1, 2), "valid")]]


def _batch_norm_ref(x, g, b):
    x2 = x.reshape(-1, x.shape[-1])
    mean, var = x2.mean(0), x2.var(0, unbiased=False)
    return ((x2 - mean) / torch.sqrt(var + 1e-3) * g + b).reshape(x.shape)


_moving_mean = np.array([0.5, -1.0, 2.0, 0.1], np.float32)
_moving_var = np.array([1.5, 0.2, 4.0, 1.0], np.float32)


def _batch_norm_inference_ref(x, g, b, mean, var, epsilon=1e-3):
    mean, var = (torch.tensor(a, dtype=torch.float64) for a in (mean, var))
    return (x - mean) / torch.sqrt(var + epsilon) * g + b


# The activations batch_norm_inference applies itself (inputs spread so that ReLU6 clips at both ends).
_FUSED_REF = {"relu": torch.relu, "relu6": lambda t: torch.clamp(t, 0, 6), "sigmoid": torch.sigmoid,
              "silu": F.silu}


def _cubed(x):
    return x * x * x, lambda dy: dy * 3 * x * x


_labels = np.array([1, 0, 3, 2, 3], np.int64)
_one_hot = np.eye(4, dtype=np.float32)[_labels]


def _probs(rng):
    z = rng.standard_normal((5, 4))
    return (np.exp(z) / np.exp(z).sum(-1, keepdims=True)).astype(np.float32)


def _cases(rng):
    """Op name -> its cases."""
    sm = lambda t, axis=-1: torch.softmax(t, axis)  # noqa: E731
    return {
        "conv2d": _conv_cases(rng),
        "depthwise_conv2d": _depthwise_cases(rng),
        "max_pool2d": _pool_cases(rng, ops.max_pool2d, "max"),
        "avg_pool2d": _pool_cases(rng, ops.avg_pool2d, "avg"),
        "global_avg_pool2d": [Case(ops.global_avg_pool2d, [_r(rng, 2, 4, 3, 5)], lambda x: x.mean((1, 2)))],
        "batch_norm_train": [Case(ops.batch_norm_train, [_r(rng, 6, 3, 3, 4) * 2 + 1, _r(rng, 4), _r(rng, 4)],
                                  _batch_norm_ref, out=0, tol=1e-4)],
        "batch_norm_inference": [
            Case(ops.batch_norm_inference, [_r(rng, 6, 3, 3, 4) * 2 + 1, _r(rng, 4), _r(rng, 4)],
                 lambda x, g, b, m=_moving_mean, v=_moving_var: _batch_norm_inference_ref(x, g, b, m, v),
                 attrs=(_moving_mean, _moving_var)),
            Case(lambda x, m, v: ops.batch_norm_inference(x, None, None, m, v, epsilon=0.01), [_r(rng, 7, 5)],
                 lambda x, m=_moving_mean[:1].repeat(5), v=_moving_var[:1].repeat(5):
                     _batch_norm_inference_ref(x, 1.0, 0.0, m, v, 0.01),
                 attrs=(_moving_mean[:1].repeat(5), _moving_var[:1].repeat(5)))] + [
            Case(ops.batch_norm_inference, [_r(rng, 6, 3, 3, 4) * 3 + 1, _r(rng, 4), _r(rng, 4)],
                 lambda x, g, b, act=act: _FUSED_REF[act](
                     _batch_norm_inference_ref(x, g, b, _moving_mean, _moving_var)),
                 attrs=(_moving_mean, _moving_var), kw=dict(activation=act))
            for act in _FUSED_REF],
        "dense": [Case(ops.dense, [_r(rng, 6, 5), _r(rng, 5, 3), _r(rng, 3)],
                       lambda x, k, b: torch.relu(x @ k + b), kw=dict(activation="relu")),
                  Case(ops.dense, [_r(rng, 2, 3, 5), _r(rng, 5, 4), _r(rng, 4)], lambda x, k, b: x @ k + b)],
        "add": [Case(ops.add, [_r(rng, 3, 4), _r(rng, 4)], torch.add),
                Case(ops.add, [_r(rng, 2, 1, 4), _r(rng, 3, 1)], torch.add)],
        "subtract": [Case(ops.subtract, [_r(rng, 2, 3, 4), _r(rng, 3, 1)], torch.sub)],
        "multiply": [Case(ops.multiply, [_r(rng, 3, 4), _r(rng, 1, 4)], torch.mul),
                     Case(ops.multiply, [_r(rng, 5)], lambda x: x * 2.5, attrs=(2.5,))],
        "divide": [Case(ops.divide, [_r(rng, 3, 4), _r(rng, 4, low=0.5)], torch.div)],
        "negative": [Case(ops.negative, [_r(rng, 3, 2)], torch.neg)],
        "exp": [Case(ops.exp, [_r(rng, 3, 4)], torch.exp)],
        "log": [Case(ops.log, [_r(rng, 3, 4, low=0.1)], torch.log)],
        "sqrt": [Case(ops.sqrt, [_r(rng, 3, 4, low=0.1)], torch.sqrt)],
        "square": [Case(ops.square, [_r(rng, 3, 4)], torch.square)],
        "relu": [Case(ops.relu, [_r(rng, 4, 5)], torch.relu)],
        "sigmoid": [Case(ops.sigmoid, [_r(rng, 4, 5) * 4], torch.sigmoid)],
        "tanh": [Case(ops.tanh, [_r(rng, 4, 5)], torch.tanh)],
        "softmax": [Case(ops.softmax, [_r(rng, 4, 5) * 3], sm),
                    Case(ops.softmax, [_r(rng, 4, 5)], lambda t: sm(t, 0), kw=dict(axis=0))],
        "matmul": [Case(ops.matmul, [_r(rng, 3, 4), _r(rng, 4, 2)], torch.matmul),
                   Case(ops.matmul, [_r(rng, 2, 3, 4), _r(rng, 4, 5)], torch.matmul)],
        "sum": [Case(ops.sum, [_r(rng, 3, 4)], torch.sum),
                Case(ops.sum, [_r(rng, 2, 3, 4)], lambda t: t.sum((0, 2)), kw=dict(axis=(0, 2))),
                Case(ops.sum, [_r(rng, 2, 3)], lambda t: t.sum(1, keepdim=True), kw=dict(axis=1, keepdims=True))],
        "mean": [Case(ops.mean, [_r(rng, 3, 4)], torch.mean),
                 Case(ops.mean, [_r(rng, 2, 3, 4)], lambda t: t.mean((-1, 0)), kw=dict(axis=(-1, 0))),
                 Case(ops.mean, [_r(rng, 2, 3)], lambda t: t.mean(0, keepdim=True), kw=dict(axis=0, keepdims=True))],
        "reshape": [Case(ops.reshape, [_r(rng, 2, 3, 4)], lambda t: t.reshape(2, -1), attrs=((2, -1),))],
        "transpose": [Case(ops.transpose, [_r(rng, 2, 3, 4)], lambda t: t.permute(1, 2, 0), attrs=((1, 2, 0),)),
                      Case(ops.transpose, [_r(rng, 2, 3)], lambda t: t.T)],
        "concatenate": [Case(lambda *xs, **kw: ops.concatenate(list(xs), **kw),
                             [_r(rng, 2, 3, 1), _r(rng, 2, 3, 4), _r(rng, 2, 3, 2)],
                             lambda *ts: torch.cat(ts, -1)),
                        Case(lambda *xs, **kw: ops.concatenate(list(xs), **kw), [_r(rng, 1, 3), _r(rng, 2, 3)],
                             lambda *ts: torch.cat(ts, 0), kw=dict(axis=0))],
        "loss": [Case(ops.loss, [_probs(rng)],  # Keras divides probabilities by their sum first
                      lambda p: -torch.log((p / p.sum(-1, keepdim=True))[torch.arange(5), torch.tensor(_labels)]).mean(),
                      attrs=(losses.SparseCategoricalCrossentropy(), _labels)),
                 Case(ops.loss, [_r(rng, 5, 4)], lambda p: ((p - torch.tensor(_one_hot, dtype=torch.float64)) ** 2).mean(),
                      attrs=(losses.MeanSquaredError(), _one_hot))],
        "activation_loss": [
            Case(ops.activation_loss, [_r(rng, 5, 4) * 2],
                 lambda z: -(torch.tensor(_one_hot, dtype=torch.float64) * torch.log_softmax(z, -1)).sum() / 5,
                 attrs=(losses.CategoricalCrossentropy(), _one_hot)),
            Case(ops.activation_loss, [_r(rng, 5, 4)],
                 lambda z: F.binary_cross_entropy(torch.sigmoid(z), torch.tensor(_one_hot, dtype=torch.float64)),
                 attrs=(losses.BinaryCrossentropy(), _one_hot))],
        "penalty": [Case(ops.penalty, [_r(rng, 3, 4)], lambda w: 0.01 * w.abs().sum() + 0.02 * (w * w).sum(),
                         attrs=(regularizers.L1L2(0.01, 0.02),))],
        "custom_gradient": [Case(lambda x: ops.custom_gradient_call([x], _cubed), [_r(rng, 3, 4)], lambda t: t ** 3)],
    }


CASES = _cases(np.random.default_rng(14))


def _torch_relu_general(t, negative_slope=0.0, max_value=None, threshold=0.0):
    y = torch.where(t > threshold, t if max_value is None else torch.clamp(t, max=max_value), torch.zeros_like(t))
    return y + negative_slope * torch.clamp(t - threshold, max=0)


def _layer_op_cases(rng):
    """The ops that layers beyond the core ones compose (activations, merges, padding, cropping)."""
    wide = lambda *shape: _r(rng, *shape) * 4  # noqa: E731  (across every piece of the piecewise ops)
    pads = ((0, 0), (1, 2), (0, 3), (0, 0))
    return {
        "relu_general": [Case(ops.relu_general, [wide(4, 6)], _torch_relu_general),
                         Case(ops.relu_general, [wide(4, 6)], lambda t: _torch_relu_general(t, 0.1, 6.0, 0.5),
                              kw=dict(negative_slope=0.1, max_value=6.0, threshold=0.5)),
                         Case(ops.relu6, [wide(3, 5)], lambda t: torch.clamp(t, 0, 6)),
                         Case(ops.leaky_relu, [wide(3, 5)], lambda t: F.leaky_relu(t, 0.2))],
        "elu": [Case(ops.elu, [wide(4, 5)], F.elu), Case(ops.elu, [wide(4, 5)], lambda t: F.elu(t, 0.5), attrs=(0.5,))],
        "selu": [Case(ops.selu, [wide(4, 5)], F.selu)],
        "gelu": [Case(ops.gelu, [wide(4, 5)], F.gelu),
                 Case(ops.gelu, [wide(4, 5)], lambda t: F.gelu(t, approximate="tanh"), kw=dict(approximate=True))],
        "softplus": [Case(ops.softplus, [wide(4, 5) * 5], F.softplus)],
        "hard_sigmoid": [Case(ops.hard_sigmoid, [wide(4, 5)], F.hardsigmoid)],
        "silu": [Case(ops.silu, [wide(4, 5)], F.silu)],
        "maximum": [Case(ops.maximum, [_r(rng, 2, 3, 4), _r(rng, 3, 1)], torch.maximum)],
        "minimum": [Case(ops.minimum, [_r(rng, 3, 4), _r(rng, 4)], torch.minimum)],
        "pad": [Case(ops.pad, [_r(rng, 2, 3, 4, 2)], lambda t: F.pad(t, (0, 0, 0, 3, 1, 2)), attrs=(pads,))],
        "crop": [Case(ops.crop, [_r(rng, 2, 7, 6, 2)], lambda t: t[:, 1:5, 0:3], attrs=(pads,))],
    }


CASES.update(_layer_op_cases(np.random.default_rng(15)))


def test_relu_and_relu6_pass_nan_and_clip_infinities():
    """As Keras (on PyTorch) and the kernels' fused ReLU do: NaN is not hidden as 0."""
    x = np.float32([np.nan, -np.inf, -1, -0.0, 0, 0.5, 6, 7, np.inf])
    np.testing.assert_array_equal(ops.relu6(x), np.float32([np.nan, 0, 0, 0, 0, 0.5, 6, 6, 6]))
    np.testing.assert_array_equal(ops.relu_general(x), np.float32([np.nan, 0, 0, 0, 0, 0.5, 6, 7, np.inf]))
    np.testing.assert_array_equal(ops.relu6(x), torch.clamp(torch.from_numpy(x), 0, 6).numpy())


def test_every_registered_op_has_a_rule_and_a_case():
    ops_ = registry()
    missing = sorted(set(ops_) - set(CASES))
    assert not missing, f"registered ops without a test case in {__file__}: {missing}"
    assert sorted(set(CASES) - set(ops_)) == [], "cases for ops that are not registered"
    assert all(callable(op.grad) for op in ops_.values())
    with pytest.raises(TypeError, match="needs a backward rule"):
        register("no_rule_op", inputs=("x",), grad=None)(lambda x: x)
    assert "no_rule_op" not in registry()


def _on(device, a):
    return to_device(a, device) if isinstance(a, np.ndarray) else a


def _run(case, device):
    """Our result and our gradients for a fixed random upstream gradient, as NumPy float64."""
    xs = [_on(device, a) for a in case.inputs]
    attrs = tuple(_on(device, a) for a in case.attrs)
    with convkit.GradientTape() as tape:
        tape.watch(xs)
        out = case.fn(*xs, *attrs, **case.kw)
        y = out if case.out is None else out[case.out]
    dy = np.random.default_rng(1).standard_normal(np.shape(y)).astype(np.float32)
    grads = tape.gradient(y, xs, output_gradients=_on(device, dy) if np.ndim(dy) else _on(device, np.asarray(dy)))
    return to_numpy(y).astype(np.float64), dy, [to_numpy(g) for g in grads]


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_forward_and_backward_match_torch_float64(name, device):
    for i, case in enumerate(CASES[name]):
        y, dy, grads = _run(case, device)
        ts = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in case.inputs]
        ref = case.ref(*ts)
        assert oracle.rel_err(y, ref.detach().numpy()) < case.tol, f"{name} case {i}: forward"
        ref.backward(torch.tensor(dy.astype(np.float64)))
        for j, (g, t) in enumerate(zip(grads, ts)):
            assert g is not None, f"{name} case {i}: no gradient for input {j}"
            assert oracle.rel_err(g, t.grad.numpy()) < 10 * case.tol, f"{name} case {i}: gradient of input {j}"
        if device == "cuda":  # the GPU agrees with the CPU as well as with the reference
            y_cpu, _, grads_cpu = _run(case, "cpu")
            assert oracle.rel_err(y, y_cpu) < case.tol
            assert all(oracle.rel_err(g, gc) < 10 * case.tol for g, gc in zip(grads, grads_cpu))
