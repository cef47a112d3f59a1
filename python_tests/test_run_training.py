"""The PyTorch and Keras twins of bench/run_training.py compute what the convkit models compute."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
os.environ.setdefault("KERAS_BACKEND", "torch")  # the benchmark runs Keras on TensorFlow; any backend checks the twin

import run_training  # noqa: E402

# Keras's torch backend trips NumPy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.mark.parametrize("name", list(run_training.MODELS))
def test_torch_twin_matches_convkit_forward(name):
    model = run_training._convkit_model(name)
    x, _ = run_training._data(name, 4, 1)
    net = run_training.torch_twin(model).eval()
    with torch.no_grad():
        theirs = torch.softmax(net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())), 1).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(run_training.MODELS))
def test_keras_twin_matches_convkit_forward(name):
    pytest.importorskip("keras")
    model = run_training._convkit_model(name)
    x, _ = run_training._data(name, 4, 1)
    twin = run_training.keras_twin(run_training.layer_specs(model), x.shape[1:], 1e-3)
    assert twin.count_params() == model.count_params()
    np.testing.assert_allclose(twin.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)


def test_keras_worker_reads_the_spec_and_refuses_a_wrong_twin(tmp_path):
    keras = pytest.importorskip("keras")
    spec = tmp_path / "twin.npz"
    run_training.write_keras_spec("lenet5", 32, spec)
    got = run_training.keras_worker(spec, min_window=0.01)
    assert got["train_img_s"] > 0 and got["infer_img_s"] > 0 and got["keras"] == keras.__version__
    with np.load(spec) as f:
        arrays = dict(f)
    arrays["w0_0"] = arrays["w0_0"] * 1.01  # a twin that is not convkit's model must not be timed
    np.savez(spec, **arrays)
    with pytest.raises(AssertionError, match="Keras twin disagrees"):
        run_training.keras_worker(spec, min_window=0.01)
