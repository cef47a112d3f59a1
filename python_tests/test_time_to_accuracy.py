"""bench/time_to_accuracy.py compares like with like: its PyTorch run follows convkit's training curve."""

import pytest

import time_to_accuracy as tta
from convkit.datasets import mnist
from helpers import real_data


@pytest.mark.parametrize("n,k", [(60000, 4), (1000, 3), (129, 4), (128, 1)])
def test_segments_split_an_epoch_into_whole_batches(n, k):
    segs = tta._segments(n, k)
    assert segs[0][0] == 0 and segs[-1][1] == n and len(segs) <= k
    assert all(a < b and a % tta.BATCH == 0 for a, b in segs)
    assert all(b == a2 for (_, b), (a2, _) in zip(segs, segs[1:]))


def test_both_frameworks_follow_the_same_curve():
    """Same initial weights, same batches in the same order, same optimizer: the two curves agree to
    within the noise of float32 summation order and dropout-free LeNet-5's sensitivity to it."""
    real_data(mnist.load_data, "MNIST")
    runs = [tta.run(fw, "lenet5", "cpu", target=0.7, max_epochs=1, evals_per_epoch=2, limit=4096)
            for fw in ("convkit", "torch")]
    ours, theirs = ([p["test_acc"] for p in r["curve"]] for r in runs)
    assert len(ours) == len(theirs) == 2
    assert ours[-1] > 0.7, runs[0]["curve"]
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 0.02, (ours, theirs)
    assert all(r["epochs_to_target"] is not None and r["seconds_to_target"] > 0 for r in runs)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_speedrun_trains_the_recipe_alike_in_both_frameworks(layout):
    """mnist_speedrun's recipe (batch, per-step cosine rate, one epoch) in convkit and in the PyTorch twin:
    the same seeded start and batches give the same accuracy to within float32 summation order."""
    real_data(mnist.load_data, "MNIST")
    ours = tta.speedrun("convkit", seed=1, limit=3200)
    theirs = tta.speedrun("torch", seed=1, limit=3200, layout=layout)
    assert ours["framework"] == "convkit" and theirs["framework"] == f"torch-{layout}"
    assert ours["epochs"] == theirs["epochs"] == 1 and ours["train_s"] > 0 and theirs["train_s"] > 0
    assert ours["test_acc"] > 0.9, ours
    assert abs(ours["test_acc"] - theirs["test_acc"]) < 0.01, (ours, theirs)


def test_the_twin_computes_the_speedrun_model():
    """The ReLU layers and momentum-0.9 normalisation of mnist_speedrun carry over to PyTorch (inference)."""
    import numpy as np
    import torch

    import convkit
    from run_training import torch_twin

    convkit.set_random_seed(3)
    model = convkit.zoo.build("mnist_speedrun")
    x = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    model.fit(x, np.arange(8), batch_size=4, epochs=1, verbose=0)  # moving statistics away from their start
    net = torch_twin(model).eval()
    assert next(m for m in net if isinstance(m, torch.nn.BatchNorm2d)).momentum == pytest.approx(0.1)
    with torch.no_grad():
        theirs = torch.softmax(net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())), 1).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), theirs, atol=1e-5)


def test_the_twin_anneals_the_rate_as_convkit_does(monkeypatch):
    """The PyTorch twin sets each step's rate to what convkit's 'cosine-steps' callback gives that step."""
    import numpy as np
    import torch

    import convkit

    seen = []
    step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda opt, *a: (seen.append(opt.param_groups[0]["lr"]),
                                                                  step(opt, *a))[1])
    r = convkit.zoo.recipe(tta.SPEEDRUN)
    rng = np.random.default_rng(0)
    data = (rng.random((200, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 200),
            rng.random((10, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 10))
    train, _, _ = tta._torch(convkit.zoo.build(tta.SPEEDRUN), "cpu", data, 64, r)
    train(np.arange(200), 0, 200)
    decay = convkit.optimizers.CosineDecay(r.learning_rate, 4)  # 200 images: 4 steps of 64, the last of 8
    assert seen == [decay(k) for k in range(4)]
