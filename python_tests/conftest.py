"""Shared fixtures: every device-aware test runs on "cpu" always and on "cuda" when a GPU is usable."""

import zlib

import numpy as np
import pytest

import convkit


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cuda" and not convkit.has_cuda():
        pytest.skip(f"CUDA {convkit.cuda_status()}")
    return request.param


@pytest.fixture
def rng(request):
    """A fresh generator per test, seeded from the test's name (stable across processes) so failures reproduce."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
