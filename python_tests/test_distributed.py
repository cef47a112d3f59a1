"""Data-parallel training (convkit.distributed) with 2 processes under Open MPI on this machine, loopback only.

Every mpirun is bounded by a timeout; collectives inside use a short one too, so nothing can hang.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import dist_worker
from convkit import distributed

HERE = Path(__file__).resolve().parent

try:
    import mpi4py  # noqa: F401
    HAVE_MPI = shutil.which("mpirun") is not None
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs mpirun (apt install openmpi-bin libopenmpi-dev) and mpi4py "
                                                    "(pip install 'convkit[distributed]')")


def mpirun(np_, args, timeout=60, env=None, wait=True):
    """``mpirun -np np_`` on this machine only (as root too), one thread per rank."""
    cmd = ["mpirun", "-np", str(np_), "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,vader",
           "--mca", "btl_vader_single_copy_mechanism", "none", "--mca", "oob_tcp_if_include", "lo",
           sys.executable, *map(str, args)]
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))


# -- equivalence with one process ---------------------------------------------------------------------------------

CONFIGS = [
    # 65 = 4 batches of 16 and one of 1: in the last, rank 0 holds nothing and still takes part
    {"name": "plain", "kind": "plain", "n": 65, "batch": 16, "epochs": 2},
    # one bucket per weight: buckets start during backward, in the same order on both ranks
    {"name": "buckets", "kind": "plain", "n": 70, "batch": 16, "epochs": 2, "bucket_mb": 1e-5},
    {"name": "syncbn", "kind": "syncbn", "n": 64, "batch": 16, "epochs": 2},
    {"name": "bn", "kind": "bn", "n": 64, "batch": 16, "epochs": 2},
]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    res = mpirun(2, [HERE / "dist_worker.py", "fit", out, json.dumps(CONFIGS)])
    assert res.returncode == 0, res.stderr
    return out


def _two_rank_result(out, name):
    got = np.load(out / f"{name}.npz")
    with open(out / f"{name}.json") as f:
        meta = json.load(f)
    assert meta["size"] == 2 and meta["ranks_agree"]
    return [got[f"arr_{i}"] for i in range(len(got.files))], meta["history"]


@needs_mpi
@pytest.mark.parametrize("name", ["plain", "buckets", "syncbn"])
def test_two_ranks_match_one_process(two_ranks, name):
    """2 ranks with global batch B end where 1 process with batch B does (Adam, 2 epochs, shuffled, with
    validation): weights within float summation order, and the epoch metrics reduced over both ranks."""
    cfg = next(c for c in CONFIGS if c["name"] == name)
    ref_w, ref_h = dist_worker.run(cfg)
    got_w, got_h = _two_rank_result(two_ranks, name)
    assert len(got_w) == len(ref_w)
    for a, b in zip(ref_w, got_w):
        assert rel(a, b) < 1e-5
    assert set(got_h) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for k in got_h:
        np.testing.assert_allclose(got_h[k], ref_h[k], rtol=1e-5)


@needs_mpi
def test_unsynchronized_batch_norm_differs(two_ranks):
    """Without synchronized=True each rank normalises by its own half batch: not what one process computes
    (which is what makes the synchronized case above mean something)."""
    ref_w, _ = dist_worker.run(next(c for c in CONFIGS if c["name"] == "bn"))
    got_w, _ = _two_rank_result(two_ranks, "bn")
    assert max(rel(a, b) for a, b in zip(ref_w, got_w)) > 1e-3


# -- sharding ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 2, 5, 16, 65])
@pytest.mark.parametrize("ranks", [1, 2, 3, 8])
def test_shards_cover_every_example_once(n, ranks):
    parts = [distributed.shard_bounds(n, r, ranks) for r in range(ranks)]
    covered = [i for lo, hi in parts for i in range(lo, hi)]
    assert covered == list(range(n))
    sizes = [hi - lo for lo, hi in parts]
    assert max(sizes) - min(sizes) <= 1


def test_epoch_batches_cover_every_example_once(monkeypatch):
    """fit's batches for each rank of 3, from one shuffled order: together every example once per epoch, and
    each global batch is the one a single process would take."""
    import convkit
    from convkit import layers
    model = convkit.Sequential([layers.Input((2,)), layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.arange(23, dtype=np.float32).reshape(-1, 1).repeat(2, axis=1)
    data = ("arrays", x, x[:, :1])
    convkit.set_random_seed(5)
    single = [xb[:, 0].tolist() for xb, _, _ in model._batches(data, 4, True, None, "fit")]
    seen = []
    monkeypatch.setattr(distributed, "broadcast", lambda a, root=0: a)  # the order every rank would get
    for r in range(3):
        monkeypatch.setattr(distributed._state, "rank", r)
        monkeypatch.setattr(distributed._state, "size", 3)
        convkit.set_random_seed(5)
        seen.append([(xb[:, 0].tolist(), n) for xb, _, n in model._batches(data, 4, True, None, "fit", True)])
    for step, batch in enumerate(single):
        assert sum((seen[r][step][0] for r in range(3)), []) == batch
        assert all(seen[r][step][1] == len(batch) for r in range(3))
    assert sorted(v for b in single for v in b) == x[:, 0].tolist()


# -- GPU set-up: NCCL through a stand-in CuPy; the real thing below when there is a GPU --------------------------------

@needs_mpi
@pytest.mark.parametrize("gpus", [1, 2])
def test_gpu_by_local_rank_and_nccl_id_from_rank_0(tmp_path, gpus):
    """Each rank uses GPU local_rank % count (2 ranks share 1 GPU), and every rank builds its NCCL communicator
    from the unique id rank 0 drew, sent over MPI; an allreduce goes in place, float32 sum, on the current stream."""
    res = mpirun(2, [HERE / "dist_worker.py", "nccl", tmp_path, gpus])
    assert res.returncode == 0, res.stderr
    reports = json.loads((tmp_path / "nccl.json").read_text())
    assert [r["rank"] for r in reports] == [0, 1]
    for r in reports:
        assert r["gpu"] == r["current"] == r["local_rank"] % gpus
        comm = [c for c in r["calls"] if c[0] == "comm"]
        assert len(comm) == 1 and comm[0][1] == 2 and comm[0][3] == r["rank"]
        assert ["allReduce", True, 10, 7, 0, 4242] in r["calls"]
    ids = [next(c for c in r["calls"] if c[0] == "comm")[2] for r in reports]
    assert ids[0] == ids[1] and len(ids[0]) == 128


def _gpu_usable():
    try:
        import cupy
        from cupy.cuda import nccl  # noqa: F401
        return cupy.cuda.runtime.getDeviceCount() > 0 and convkit_has_cuda()
    except Exception:
        return False


def convkit_has_cuda():
    import convkit
    return convkit.has_cuda()


@needs_mpi
@pytest.mark.skipif(not _gpu_usable(), reason="needs a GPU with CuPy's NCCL and convkit's CUDA module")
def test_nccl_two_ranks_on_gpu_match_one_process(tmp_path):
    """The NCCL path for real: 2 processes (sharing GPU 0 if there is one) train on the GPU and end where one
    process does."""
    cfgs = [{**c, "device": "cuda"} for c in CONFIGS if c["name"] in ("plain", "syncbn")]
    res = mpirun(2, [HERE / "dist_worker.py", "fit", tmp_path, json.dumps(cfgs)], timeout=300)
    assert res.returncode == 0, res.stderr
    for cfg in cfgs:
        ref_w, _ = dist_worker.run(cfg)
        got_w, _ = _two_rank_result(tmp_path, cfg["name"])
        for a, b in zip(ref_w, got_w):
            assert rel(a, b) < 1e-5
