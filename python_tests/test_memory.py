"""Training holds steady host memory: no growth per epoch once allocator pools have warmed up."""

import numpy as np

import memory_training
from convkit import callbacks as cb


class _Leak(cb.Callback):
    """Keeps 4 MiB per epoch alive, as a leak in the training loop would."""

    def __init__(self):
        super().__init__()
        self.kept = []

    def on_epoch_end(self, epoch, logs=None):
        self.kept.append(np.ones(2**20, np.float32))


def test_host_memory_does_not_grow_per_epoch():
    r = memory_training.measure(epochs=10, n=512)
    assert len(r["host_rss_mib"]) == 10
    assert memory_training.growth(r["host_rss_mib"]) < 2.0, r["host_rss_mib"]


def test_the_measurement_sees_a_leak():
    r = memory_training.measure(epochs=10, n=512, callbacks=[_Leak()])
    assert memory_training.growth(r["host_rss_mib"]) > 20.0, r["host_rss_mib"]
