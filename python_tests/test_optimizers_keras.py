"""Every optimizer follows Keras 3's update rule step by step (Keras itself on its PyTorch backend fed the
same weights and gradients), with Keras's defaults, its compile names, the tf.keras 2 ``lr=`` spelling,
the GPU's arrays, and state that survives a save and load mid-training."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

import convkit  # noqa: E402
from convkit import layers as L  # noqa: E402
from convkit import optimizers  # noqa: E402
from convkit.layers.base import Variable  # noqa: E402
from helpers import to_device, to_numpy  # noqa: E402

CASES = [
    ("SGD", {}), ("SGD", {"momentum": 0.9}), ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("RMSprop", {}), ("RMSprop", {"momentum": 0.5}), ("RMSprop", {"centered": True, "rho": 0.8}),
    ("Adagrad", {}), ("Adagrad", {"initial_accumulator_value": 0.5, "epsilon": 1e-4}),
    ("Adadelta", {"learning_rate": 1.0}), ("Adadelta", {}),
    ("Adamax", {}), ("Nadam", {}), ("Nadam", {"learning_rate": 0.01, "beta_1": 0.8}),
    ("Adam", {}), ("AdamW", {"learning_rate": 0.01}),
]
STEPS = 12


def _updates_side_by_side(name, kwargs, rng, device="cpu"):
    """Weights after STEPS updates by convkit's and Keras's optimizer from the same start and gradients."""
    shapes = [(3, 4), (5,)]
    w0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) * 0.5 for s in shapes] for _ in range(STEPS)]
    ours = getattr(optimizers, name)(**kwargs)
    theirs = getattr(keras.optimizers, name)(**kwargs)
    vs = [Variable(to_device(w, device), f"w{i}") for i, w in enumerate(w0)]
    kvs = [keras.Variable(w) for w in w0]
    for step, gs in enumerate(grads):
        ours.apply_gradients(zip([to_device(g, device) for g in gs], vs))
        theirs.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in gs], kvs))
        for v, kv in zip(vs, kvs):
            np.testing.assert_allclose(to_numpy(v.value), keras.ops.convert_to_numpy(kv), rtol=2e-6, atol=1e-6,
                                       err_msg=f"{name}{kwargs} differs from Keras after step {step + 1}")
    return ours, vs


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_updates_match_keras_step_by_step(name, kwargs, rng):
    ours, _ = _updates_side_by_side(name, kwargs, rng)
    assert ours.iterations == STEPS


@pytest.mark.skipif(not convkit.has_cuda(), reason=f"CUDA {convkit.cuda_status()}")
@pytest.mark.parametrize("name", ["RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "SGD", "Adam"])
def test_updates_on_the_gpu_match_keras(name, rng):
    kwargs = {"momentum": 0.9, "centered": True} if name == "RMSprop" else \
        {"momentum": 0.9, "nesterov": True} if name == "SGD" else {}
    _, vs = _updates_side_by_side(name, kwargs, rng, "cuda")
    assert all(type(v.value).__module__.startswith("cupy") for v in vs)


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "Nadam"])
def test_defaults_are_keras_defaults(name):
    ours, theirs = getattr(optimizers, name)().get_config(), getattr(keras.optimizers, name)().get_config()
    shared = set(ours) & set(theirs) - {"name"}
    assert {"learning_rate", "weight_decay"} <= shared
    for key in shared:
        if isinstance(theirs[key], float):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-7), key
        else:  # None, flags and counts; newer pytest refuses approx(None) with a tolerance
            assert ours[key] == theirs[key], key


def test_compile_takes_every_keras_name_and_rmsprop_is_the_default():
    model = convkit.Sequential([L.Input((4,)), L.Dense(3, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy")  # Keras's default optimizer
    assert type(model.optimizer) is optimizers.RMSprop
    for name, cls in [("rmsprop", "RMSprop"), ("adagrad", "Adagrad"), ("adadelta", "Adadelta"),
                      ("adamax", "Adamax"), ("nadam", "Nadam"), ("sgd", "SGD"), ("adam", "Adam")]:
        model.compile(optimizer=name, loss="sparse_categorical_crossentropy")
        assert type(model.optimizer).__name__ == cls
        keras_lr = getattr(keras.optimizers, cls)().get_config()["learning_rate"]  # a float32 variable's value
        assert model.optimizer.learning_rate == pytest.approx(keras_lr, rel=1e-7)


def test_lr_and_decay_are_accepted_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="`lr` is deprecated"):
        opt = optimizers.RMSprop(lr=0.01)
    assert opt.learning_rate == 0.01
    with pytest.warns(DeprecationWarning, match="`decay` is deprecated"):
        opt = optimizers.SGD(learning_rate=0.1, decay=0.5)
    opt.iterations = 4  # tf.keras 2: lr / (1 + decay * iterations)
    assert opt.learning_rate == pytest.approx(0.1 / 3)
    with pytest.warns(DeprecationWarning):
        assert optimizers.Adam(lr=0.5).get_config()["learning_rate"] == 0.5
    with pytest.warns(DeprecationWarning, match="optimizer.lr"):
        opt.lr = 0.2
    with pytest.warns(DeprecationWarning, match="optimizer.lr"):
        assert opt.lr == opt.learning_rate == pytest.approx(0.2 / 3)


@pytest.mark.parametrize("name", ["RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam"])
def test_state_resumes_from_a_saved_model_exactly(name, rng, tmp_path):
    convkit.set_random_seed(3)
    model = convkit.Sequential([L.Input((6,)), L.Dense(5, activation="relu"), L.Dense(3, activation="softmax")])
    kwargs = {"momentum": 0.5, "centered": True} if name == "RMSprop" else {}
    model.compile(getattr(optimizers, name)(learning_rate=0.05, **kwargs), "sparse_categorical_crossentropy")
    x, y = rng.standard_normal((32, 6)).astype(np.float32), rng.integers(0, 3, 32)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "m.convkit")
    again = convkit.models.load_model(tmp_path / "m.convkit")
    assert type(again.optimizer) is type(model.optimizer) and again.optimizer.iterations == 4
    for m in (model, again):
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bad_optimizer_arguments_are_refused():
    with pytest.raises(ValueError, match=r"RMSprop: rho must be in \[0, 1\), got 1.5"):
        optimizers.RMSprop(rho=1.5)
    with pytest.raises(ValueError, match="Adagrad: epsilon must be positive"):
        optimizers.Adagrad(epsilon=0)
    with pytest.raises(ValueError, match="initial_accumulator_value must be >= 0"):
        optimizers.Adagrad(initial_accumulator_value=-1)
