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
