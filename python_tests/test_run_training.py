"""The PyTorch twins of bench/run_training.py compute what the convkit models compute."""

import numpy as np
import pytest
import torch

import run_training


@pytest.mark.parametrize("name", list(run_training.MODELS))
def test_torch_twin_matches_convkit_forward(name):
    model = run_training._convkit_model(name)
    x, _ = run_training._data(name, 4, 1)
    net = run_training.torch_twin(model).eval()
    with torch.no_grad():
        theirs = torch.softmax(net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())), 1).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), theirs, rtol=1e-4, atol=1e-6)
