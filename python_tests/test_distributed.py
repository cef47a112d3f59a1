"""Data-parallel training (convkit.distributed) with 2 processes under Open MPI on this machine, loopback only.

Every mpirun is bounded by a timeout; collectives inside use a short one too, so nothing can hang.
"""

import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest

import dist_worker
import run_distributed
from convkit import distributed

HERE = Path(__file__).resolve().parent

try:
    import mpi4py  # noqa: F401
    HAVE_MPI = shutil.which("mpirun") is not None
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="needs mpirun (apt install openmpi-bin libopenmpi-dev) and mpi4py "
                                                    "(pip install 'convkit[distributed]')")


def mpirun(np_, args, timeout=60, env=None):
    """``mpirun -np np_ python args`` on this machine only (bench/run_distributed.py's command line); the whole
    process group is killed if it outlives ``timeout``."""
    cmd, base = run_distributed.mpirun_command(np_, args)
    env = {**base, "PYTHONPATH": os.pathsep.join([str(HERE), base["PYTHONPATH"]]), **(env or {})}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # mpirun and every rank it started
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


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
    # batches from a Dataset (every rank runs the pipeline and keeps its part of each batch)
    {"name": "dataset", "kind": "plain", "n": 50, "batch": 16, "epochs": 2, "dataset": True},
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
@pytest.mark.parametrize("name", ["plain", "buckets", "syncbn", "dataset"])
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


@needs_mpi
def test_collectives_on_two_ranks(tmp_path):
    res = mpirun(2, [HERE / "dist_worker.py", "collectives", tmp_path])
    assert res.returncode == 0, res.stderr
    reports = [json.loads((tmp_path / f"collectives-{r}.json").read_text()) for r in (0, 1)]
    for r, rep in enumerate(reports):
        assert (rep["rank"], rep["size"], rep["local_rank"], rep["chief"]) == (r, 2, r, r == 0)
        assert rep["sum"] == [3.0, 4.0] and rep["mean"] == [1.5, 2.0]
        assert rep["max"] == [2.0, 2.0] and rep["min"] == [1.0, 2.0] and rep["int_sum"] == [3]
        assert rep["broadcast"] == [0, 2, 4]  # rank 1's
        assert rep["allgather"] == [[0, 0], [1, 10]]
        assert rep["text"] == "from rank 0"


# -- in one process, against a stand-in communicator ---------------------------------------------------------------

class FakeRequest:
    def __init__(self, done=True):
        self.done = done

    def Test(self):
        return self.done


class FakeComm:
    """Rank 0 of 2 whose partner contributes zeros; records every collective it is asked to start."""

    def __init__(self, complete=True):
        self.calls, self.complete, self.aborted = [], complete, None

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 2

    def Iallreduce(self, _, buf, op=None):
        self.calls.append(("allreduce", buf.size))
        return FakeRequest(self.complete)

    def Ibcast(self, buf, root=0):
        self.calls.append(("broadcast", buf.size))
        return FakeRequest(self.complete)

    def Abort(self, code):
        self.aborted = code


def _fake_world(monkeypatch, comm, **kw):
    """convkit.distributed on ``comm`` in this process, without MPI (nothing here initialises it)."""
    monkeypatch.setattr(distributed, "_state", distributed._State())
    monkeypatch.setattr(distributed, "_mpi", lambda: types.SimpleNamespace(IN_PLACE=None, SUM="sum", MAX="max",
                                                                           MIN="min"))
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "0")
    distributed.init(device="cpu", comm=comm, **kw)
    return comm


@pytest.fixture
def fake_comm(monkeypatch):
    return _fake_world(monkeypatch, FakeComm(), timeout=5, bucket_mb=1e-6)


def test_buckets_start_during_backward(fake_comm):
    """With one bucket per weight, the buckets of the last layers are summed before backward reaches the first."""
    import convkit
    from convkit import layers
    model = convkit.Sequential([layers.Input((6,)), layers.Dense(5), layers.Dense(4), layers.Dense(3)])
    model.compile("sgd", "mse")
    first, started_before_first = model.layers[0], []
    real = type(first).backward

    def backward(self, *a, **kw):
        if self is first:
            started_before_first.append(sum(what == "allreduce" for what, _ in fake_comm.calls))
        return real(self, *a, **kw)

    type(first).backward = backward
    try:
        model.fit(np.ones((8, 6), np.float32), np.zeros((8, 3), np.float32), batch_size=8, epochs=1, verbose=0,
                  shuffle=False)
    finally:
        type(first).backward = real
    sums = [n for what, n in fake_comm.calls if what == "allreduce"]
    # 6 buckets in reverse weight order: dense_2's bias and kernel, dense_1's, then dense's
    assert sums[:6] == [3, 12, 4, 20, 5, 30]
    assert started_before_first == [4]  # the 4 buckets of the two later layers were already under way


def test_a_collective_past_its_timeout_aborts_with_a_clear_error(monkeypatch, capsys):
    comm = _fake_world(monkeypatch, FakeComm(complete=False), timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(distributed.CollectiveTimeout, match="rank 0 of 2 waited 0.2 s in broadcast"):
        distributed.broadcast(np.zeros(3))
    assert 0.2 <= time.monotonic() - t0 < 2
    assert comm.aborted == 1
    assert "Aborting every rank" in capsys.readouterr().err


def test_bad_arguments(fake_comm, monkeypatch):
    with pytest.raises(ValueError, match="op must be one of"):
        distributed.allreduce(np.zeros(2), "prod")
    with pytest.raises(TypeError, match="NumPy or CuPy array"):
        distributed.allreduce([1.0, 2.0])
    with pytest.raises(ValueError, match="positive number of seconds"):
        distributed.init(timeout=0, comm=fake_comm)
    monkeypatch.setenv("CONVKIT_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="CONVKIT_DIST_TIMEOUT"):
        distributed.init(comm=fake_comm)
    with pytest.raises(ValueError, match="device"):
        distributed.init(device="tpu", comm=fake_comm)


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


# -- the trainer under mpirun: a rank that dies or hangs, then --resume ------------------------------------------------

DRIVER = textwrap.dedent('''
    import os, signal, sys
    sys.path.insert(0, os.environ["CONVKIT_TEST_DIR"])
    from test_cli import fake_dataset
    import convkit.train as cli
    from convkit import distributed
    from convkit.models.training import Trainer

    cli.load_dataset = lambda name, data_dir=None: fake_dataset(name, n=1000)
    # CONVKIT_TEST_STOP=RANK:STEP:SIGNAL: that rank sends itself SIGNAL before its STEP-th training step
    rank_, step_, sig = (os.environ.get("CONVKIT_TEST_STOP") or "-1:0:KILL").split(":")
    steps, real_step = [0], Trainer._parallel_step

    def step(self, *args):
        steps[0] += 1
        if distributed.rank() == int(rank_) and steps[0] == int(step_):
            os.kill(os.getpid(), getattr(signal, "SIG" + sig))
        return real_step(self, *args)

    Trainer._parallel_step = step
    sys.exit(cli.main(sys.argv[1:]))
''')
RUN = ["lenet", "--epochs", "3", "--limit", "300", "--batch-size", "50", "--verbose", "2"]  # 6 steps an epoch


def _train(tmp_path, extra, env=None, timeout=60):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return mpirun(2, [driver, *RUN, "--out", tmp_path / "run", *extra], timeout=timeout,
                  env={"CONVKIT_TEST_DIR": str(HERE), **(env or {})})


def _checkpoint_epoch(tmp_path):
    from convkit import saving
    from convkit.train import CHECKPOINT
    _, extra = saving.load_model(str(tmp_path / "run" / CHECKPOINT), return_extra=True)
    return extra


@needs_mpi
def test_killed_rank_ends_the_run_and_resume_continues(tmp_path):
    """Rank 1 is killed in the second epoch: the run ends (non-zero) instead of hanging, the checkpoint of the
    first epoch is whole, and --resume under mpirun finishes the run from it; only rank 0 printed."""
    t0 = time.monotonic()
    res = _train(tmp_path, [], {"CONVKIT_TEST_STOP": "1:8:KILL"})
    assert res.returncode != 0 and time.monotonic() - t0 < 50
    first = _checkpoint_epoch(tmp_path)
    assert first["epoch"] == 1 and first["batch_size"] == 50
    res = _train(tmp_path, ["--resume"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("Resuming lenet5_aug") == 1 and res.stdout.count("Test loss") == 1
    assert "over 2 ranks" in res.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["epochs_run"] == 3
    assert metrics["history"]["loss"][0] == first["history"]["loss"][0]
    assert (tmp_path / "run" / "log.csv").read_text().count("\n") == 4  # a header and 3 epochs, each once


@needs_mpi
def test_hung_rank_times_out_with_a_clear_error(tmp_path):
    """Rank 1 stops (SIGSTOP) in the second epoch: rank 0 gives up after the timeout with an error naming
    itself and the operation, every process is ended, and the checkpoint of the first epoch is whole."""
    t0 = time.monotonic()
    res = _train(tmp_path, [], {"CONVKIT_TEST_STOP": "1:8:STOP", "CONVKIT_DIST_TIMEOUT": "4"})
    assert res.returncode != 0 and time.monotonic() - t0 < 50
    assert "rank 0 of 2 waited 4 s in the gradient allreduce" in res.stderr
    assert _checkpoint_epoch(tmp_path)["epoch"] == 1


def test_ring_allreduce_cost_model():
    """bench/run_distributed.py's arithmetic: 2(N-1) latencies plus 2(N-1)/N of the bytes over the link."""
    rd = run_distributed
    assert rd.ring_seconds(1e6, 1, 1e9, 1e-5) == 0.0
    assert rd.ring_seconds(1e6, 2, 1e9, 0.0) == pytest.approx(1e-3)
    assert rd.ring_seconds(8e6, 8, 1e9, 1e-5) == pytest.approx(14e-5 + 2 * 7 / 8 * 8e-3)
    assert rd.hierarchical_seconds(8e6, 1, 8, 1e10, 1e9, 0, 0) == pytest.approx(rd.ring_seconds(8e6, 8, 1e10, 0))
    assert rd.hierarchical_seconds(8e6, 4, 8, 1e10, 1e9, 0, 0) == pytest.approx(
        2 * 7 / 8 * 8e6 / 1e10 + 2 * 3 / 4 * 8e6 / 1e9)


def test_synchronized_flag_as_keras_spells_it():
    """BatchNormalization(synchronized=True) takes Keras 3's argument and config key; SyncBatchNormalization is
    the same layer; in one process it computes exactly what the plain layer does."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    import convkit
    from convkit import layers
    assert keras.layers.BatchNormalization().get_config()["synchronized"] is False  # (True needs TensorFlow)
    assert layers.BatchNormalization().get_config()["synchronized"] is False
    assert layers.BatchNormalization(synchronized=True).get_config()["synchronized"] is True
    sync = layers.SyncBatchNormalization()
    assert sync.synchronized and not layers.BatchNormalization().synchronized
    again = layers.SyncBatchNormalization.from_config(sync.get_config())
    assert again.synchronized and isinstance(again, layers.BatchNormalization)
    x = np.random.default_rng(0).standard_normal((6, 3, 3, 2)).astype(np.float32)
    outs = []
    for layer in (layers.BatchNormalization(), layers.SyncBatchNormalization()):
        model = convkit.Sequential([layers.Input((3, 3, 2)), layer])
        outs.append(model(x, training=True))
        outs.append(layer.moving_variance.numpy())
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(outs[1], outs[3])
