"""convkit.ops.batch_norm_train and its backward against PyTorch's batch_norm in float64 (bad input:
test_ops_errors.py)."""

import numpy as np
import pytest
torch = pytest.importorskip("torch")
import torch.nn.functional as F

from convkit import ops
from helpers import to_device, to_numpy

CASES = [
    # (shape, affine, scale and offset of the data)
    ((16, 5), True, (1.0, 0.0)),
    ((3, 7, 9, 37), True, (2.0, 1.0)),   # 189 rows: several blocks on every thread
    ((2, 4, 4, 3), False, (1.0, 0.0)),   # no gamma/beta
    ((4, 10, 10, 8), True, (0.01, 100.0)),  # far from zero: a one-pass E[x^2] - mean^2 would cancel
    ((1, 1, 2, 4), True, (1.0, 0.0)),    # two rows (PyTorch refuses one)
]


@pytest.mark.parametrize("shape,affine,data", CASES, ids=str)
def test_forward_and_backward_match_torch(device, rng, shape, affine, data):
    scale, offset = data
    c = shape[-1]
    x = (rng.standard_normal(shape) * scale + offset).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(c).astype(np.float32) if affine else None
    b = rng.standard_normal(c).astype(np.float32) if affine else None

    xt = torch.tensor(x.reshape(-1, c), dtype=torch.float64, requires_grad=True)
    gt, bt = ((torch.tensor(v, dtype=torch.float64, requires_grad=True) if affine else None) for v in (g, b))
    ref = F.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-3)
    ref.backward(torch.tensor(dy.reshape(-1, c), dtype=torch.float64))

    dev = lambda a: None if a is None else to_device(a, device)  # noqa: E731
    y, xhat, mean, var, inv = ops.batch_norm_train(dev(x), dev(g), dev(b), 1e-3)
    assert y.shape == shape and xhat.shape == (x.size // c, c)
    x64 = x.reshape(-1, c).astype(np.float64)
    np.testing.assert_allclose(to_numpy(mean), x64.mean(0), rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(to_numpy(var), x64.var(0), rtol=1e-4, atol=1e-7 * scale**2)
    np.testing.assert_allclose(to_numpy(y).reshape(-1, c), ref.detach().numpy(), rtol=1e-4, atol=1e-4)

    dx, dgamma, dbeta = ops.batch_norm_train_backward(dev(dy), xhat, inv, dev(g))
    assert dx.shape == shape
    np.testing.assert_allclose(to_numpy(dx).reshape(-1, c), xt.grad.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(to_numpy(dbeta), dy.reshape(-1, c).astype(np.float64).sum(0), rtol=1e-5, atol=1e-4)
    if affine:
        np.testing.assert_allclose(to_numpy(dgamma), gt.grad.numpy(), rtol=1e-4, atol=1e-4)
        none, dgamma2, _ = ops.batch_norm_train_backward(dev(dy), xhat, inv, dev(g), need_dx=False)
        assert none is None
        np.testing.assert_array_equal(to_numpy(dgamma2), to_numpy(dgamma))

