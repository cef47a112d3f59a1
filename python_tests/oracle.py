"""Reference implementations: PyTorch CPU ops in float64 (autograd for gradients).

Shapes follow convkit (NHWC activations, HWIO kernels); TensorFlow's asymmetric
'same' padding is applied explicitly with F.pad, so torch never guesses it.
"""

import math

import numpy as np
import pytest
torch = pytest.importorskip("torch")
import torch.nn.functional as F


def tf_pads(size, window, stride, dilation, padding):
    """(before, after) padding of one dimension under TensorFlow's rule."""
    extent = (window - 1) * dilation + 1
    if padding == "valid":
        return 0, 0
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def _t(a):
    return torch.tensor(np.ascontiguousarray(a, dtype=np.float64), requires_grad=True)


def _nchw(t):
    return t.permute(0, 3, 1, 2)


def _nhwc(t):
    return t.permute(0, 2, 3, 1)


def _grads(out, dy, *inputs):
    out.backward(torch.tensor(np.asarray(dy, dtype=np.float64)))
    return [None if t is None else t.grad.numpy() for t in inputs]


def conv2d(x, w, b, dy, strides, padding, dilation, relu=False):
    """Forward and gradients: (y, dx, dw, db); dy may be None for forward only."""
    # Leaves are made contiguous in torch's own layouts (NCHW, OIHW): some of its
    # CPU backward paths refuse gradients of permuted views.
    xt, wt = _t(np.transpose(x, (0, 3, 1, 2))), _t(np.transpose(w, (3, 2, 0, 1)))
    bt = None if b is None else _t(b)
    (pt, pb), (pl, pr) = (tf_pads(x.shape[i + 1], w.shape[i], strides[i], dilation[i], padding) for i in (0, 1))
    y = _nhwc(F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wt, bt, stride=strides, dilation=dilation))
    if relu:
        y = torch.relu(y)
    if dy is None:
        return y.detach().numpy()
    dx, dw, db = _grads(y, dy, xt, wt, bt)
    return y.detach().numpy(), dx.transpose(0, 2, 3, 1), dw.transpose(2, 3, 1, 0), db


def max_pool2d(x, dy, pool, strides, padding):
    """Forward and dx of TensorFlow-style max pooling ('same' pads with -inf)."""
    xt = _t(x)
    (pt, pb), (pl, pr) = (tf_pads(x.shape[i + 1], pool[i], strides[i], 1, padding) for i in (0, 1))
    xp = F.pad(_nchw(xt), (pl, pr, pt, pb), value=-math.inf)
    y = _nhwc(F.max_pool2d(xp, pool, strides))
    return y.detach().numpy(), _grads(y, dy, xt)[0]


def avg_pool2d(x, dy, pool, strides, padding):
    """Forward and dx of TensorFlow-style average pooling (padded cells excluded from the count)."""
    xt = _t(x)
    (pt, pb), (pl, pr) = (tf_pads(x.shape[i + 1], pool[i], strides[i], 1, padding) for i in (0, 1))
    pads = (pl, pr, pt, pb)
    sums = F.avg_pool2d(F.pad(_nchw(xt), pads), pool, strides, divisor_override=1)
    ones = torch.ones((1, 1) + tuple(x.shape[1:3]), dtype=torch.float64)
    counts = F.avg_pool2d(F.pad(ones, pads), pool, strides, divisor_override=1)
    y = _nhwc(sums / counts)
    return y.detach().numpy(), _grads(y, dy, xt)[0]


def rel_err(out, ref):
    """Norm-wise relative error ||out - ref|| / ||ref|| in float64 (0 when both are empty or zero)."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != reference {ref.shape}"
    denom = np.linalg.norm(ref)
    num = np.linalg.norm(out - ref)
    return 0.0 if num == 0 else num / max(denom, 1e-300)


def sum_err(out, ref, ref_abs):
    """``rel_err`` for results that are sums of products, where cancellation can leave ``ref`` far
    smaller than its terms: float32 then cannot do better than a small fraction of the terms'
    size, so the error is taken relative to ``ref`` or to 1% of ``ref_abs`` (the same sums over
    absolute values), whichever is larger. Random data cancels to about 1/sqrt(terms) of
    ``ref_abs``, so below 10^4 terms only a heavy cancellation switches to the second scale."""
    out, ref, ref_abs = (np.asarray(a, np.float64) for a in (out, ref, ref_abs))
    assert out.shape == ref.shape == ref_abs.shape, f"shape {out.shape} != reference {ref.shape}"
    num = np.linalg.norm(out - ref)
    return 0.0 if num == 0 else num / max(np.linalg.norm(ref), 1e-2 * np.linalg.norm(ref_abs), 1e-300)

