"""Data-parallel training across processes: MPI (mpi4py) for processes and CPU arrays, NCCL (CuPy) for GPU arrays.

Launch the same script on every process with ``mpirun -np N`` (or ``mpiexec``, ``srun``) and call
:func:`init` first; ``fit`` then trains data-parallel: rank 0's weights are broadcast, every global batch is
split across the ranks, gradients are summed in buckets (started during the backward pass) and every rank
applies the same update. Only rank 0 prints, logs and writes checkpoints (see :func:`is_chief`).

Every collective waits at most ``timeout`` seconds (``init(timeout=...)``, else env ``CONVKIT_DIST_TIMEOUT``,
else 300): a rank that died or hangs makes the others stop with an error naming the rank and the operation,
and the whole job is aborted instead of hanging.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from convkit._backend import is_cupy

DEFAULT_TIMEOUT = 300.0
DEFAULT_BUCKET_MB = 25.0
_OPS = ("sum", "mean", "max", "min")
# Environment variables that launchers set: (size, rank within the node)
_LAUNCHERS = (("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),  # Open MPI
              ("PMI_SIZE", "MPI_LOCALRANKID"),  # MPICH / Intel MPI (Hydra)
              ("SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"),  # srun
              ("PMIX_SIZE", "PMIX_LOCAL_RANK"))


class CollectiveTimeout(RuntimeError):
    """A collective did not complete within the timeout: another rank died, hangs or diverged."""


class _State:
    comm = None  # mpi4py communicator (or a stand-in with the same methods)
    rank, size, local_rank = 0, 1, 0
    timeout = DEFAULT_TIMEOUT
    bucket_bytes = int(DEFAULT_BUCKET_MB * 2 ** 20)
    gpu = None  # the GPU this process uses, when it uses one
    nccl = None  # NCCL communicator, made on first use of a GPU array


_state = _State()


# -- set-up ----------------------------------------------------------------------------------------------------

def launched_size() -> int:
    """How many processes the launcher started (from its environment); 1 when not launched by one."""
    for size_var, _ in _LAUNCHERS:
        v = os.environ.get(size_var)
        if v and v.isdigit():
            return int(v)
    return 1


def _env_local_rank():
    for _, var in _LAUNCHERS:
        v = os.environ.get(var)
        if v and v.isdigit():
            return int(v)
    return None


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"convkit.distributed needs mpi4py and an MPI library (Open MPI or MPICH): "
                          f"pip install 'convkit[distributed]' ({e})") from None
    return MPI


def _timeout_value(timeout) -> float:
    if timeout is None:
        env = os.environ.get("CONVKIT_DIST_TIMEOUT")
        try:
            timeout = float(env) if env else DEFAULT_TIMEOUT
        except ValueError:
            raise ValueError(f"CONVKIT_DIST_TIMEOUT must be a number of seconds, got {env!r}") from None
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError(f"init: timeout must be a positive number of seconds, got {timeout!r}")
    return timeout


def init(timeout=None, device="auto", bucket_mb=DEFAULT_BUCKET_MB, comm=None) -> None:
    """Join the job started by ``mpirun``/``mpiexec``/``srun`` (a job of one process without a launcher).

    ``timeout``: seconds any collective may wait (default env CONVKIT_DIST_TIMEOUT, else 300).
    ``device``: 'auto' picks GPU ``local_rank % GPU count`` when CUDA is usable, 'cuda' requires one,
    'cpu' uses none. ``bucket_mb``: size of the gradient buckets summed together. ``comm``: an mpi4py
    communicator to use instead of COMM_WORLD.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"init: device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if not bucket_mb > 0:
        raise ValueError(f"init: bucket_mb must be positive, got {bucket_mb!r}")
    _state.timeout = _timeout_value(timeout)
    _state.bucket_bytes = max(4, int(bucket_mb * 2 ** 20))
    if comm is None:
        comm = _mpi().COMM_WORLD
    _state.comm, _state.rank, _state.size = comm, comm.Get_rank(), comm.Get_size()
    local = _env_local_rank()
    if local is None:  # ranks sharing this node's memory, in rank order
        local = comm.Split_type(_mpi().COMM_TYPE_SHARED, key=_state.rank).Get_rank()
    _state.local_rank = local
    _state.nccl = None
    _state.gpu = _select_gpu(local, device) if device != "cpu" else None


def _select_gpu(local_rank, device):
    """Make GPU ``local_rank % count`` current before any CUDA context exists (several ranks may share one)."""
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no CuPy, no driver, no device
        if device == "cuda":
            raise RuntimeError(f"init(device='cuda'): no usable GPU ({e})") from None
        return None
    if count == 0:
        if device == "cuda":
            raise RuntimeError("init(device='cuda'): no GPU found")
        return None
    gpu = local_rank % count
    cupy.cuda.Device(gpu).use()
    return gpu


def is_initialized() -> bool:
    return _state.comm is not None


def rank() -> int:
    """This process's rank (0 without init)."""
    return _state.rank


def size() -> int:
    """How many processes train together (1 without init)."""
    return _state.size


def local_rank() -> int:
    """This process's rank among those on its machine (chooses its GPU)."""
    return _state.local_rank


def active() -> bool:
    """True when init() joined a job of more than one process: fit and evaluate then run data-parallel."""
    return _state.comm is not None and _state.size > 1


def is_chief() -> bool:
    """True on the process that prints, logs and writes files: rank 0, or the only process."""
    return _state.rank == 0


def print0(*args, **kwargs) -> None:
    """print() on the chief process only."""
    if is_chief():
        print(*args, **kwargs)


# -- waiting with a deadline -----------------------------------------------------------------------------------

def _fail(what: str):
    """Report a collective that did not finish and abort every process of the job."""
    msg = (f"convkit.distributed: rank {_state.rank} of {_state.size} waited {_state.timeout:g} s in {what} "
           f"without the other ranks: one has died, hangs or left the training loop. Aborting every rank "
           f"(init(timeout=...) or CONVKIT_DIST_TIMEOUT sets the wait).")
    print(msg, file=sys.stderr, flush=True)
    if _state.nccl is not None:
        try:
            _state.nccl.abort()
        except Exception:  # aborting is best effort: MPI's Abort below ends the process anyway
            pass
    _state.comm.Abort(1)
    raise CollectiveTimeout(msg)  # reached only when the communicator's Abort returns (a stand-in)


def _wait(done, what: str) -> None:
    """Poll ``done()`` until true; past the deadline, fail. MPI moves a non-blocking collective on only
    inside calls such as Test, one fragment at a time, so polls must come often: between them the core
    is yielded to any runnable process, and only a long wait (a slower rank, not the transfer) sleeps."""
    if done():
        return
    start = time.monotonic()
    deadline = start + _state.timeout
    while not done():
        now = time.monotonic()
        if now > deadline:
            _fail(what)
        if now - start < 0.1:
            os.sched_yield()
        else:
            time.sleep(5e-4)


def _wait_request(req, what: str) -> None:
    _wait(req.Test, what)


# -- collectives -------------------------------------------------------------------------------------------------

def _check_init(what):
    if _state.comm is None:
        raise RuntimeError(f"convkit.distributed.{what}: call convkit.distributed.init() first")


def _host(a, what):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"convkit.distributed.{what}: expected a NumPy or CuPy array, got {type(a).__name__}")
    return np.ascontiguousarray(a)


def _mpi_op(op):
    MPI = _mpi()
    return {"sum": MPI.SUM, "mean": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]


def allreduce(a, op="sum"):
    """``op`` ('sum', 'mean', 'max', 'min') of ``a`` over every rank, returned on every rank on a's device."""
    _check_init("allreduce")
    if op not in _OPS:
        raise ValueError(f"convkit.distributed.allreduce: op must be one of {_OPS}, got {op!r}")
    if is_cupy(a):
        out = _gpu_collective("allreduce", a, op=op)
    else:
        out = _host(a, "allreduce").copy()
        if _state.size > 1:
            _wait_request(_state.comm.Iallreduce(_mpi().IN_PLACE, out, op=_mpi_op(op)), "allreduce")
    if op == "mean":
        out = out / _state.size if out.dtype.kind == "f" else out // _state.size
    return out


def broadcast(a, root=0):
    """Rank ``root``'s ``a`` on every rank (every rank passes an array of the same shape and dtype)."""
    _check_init("broadcast")
    if is_cupy(a):
        return _gpu_collective("broadcast", a, root=root)
    out = _host(a, "broadcast").copy()
    if _state.size > 1:
        _wait_request(_state.comm.Ibcast(out, root=root), "broadcast")
    return out


def allgather(a):
    """Every rank's ``a`` stacked along a new first axis, in rank order (shapes and dtypes must agree)."""
    _check_init("allgather")
    if is_cupy(a):
        return _gpu_collective("allgather", a)
    a = _host(a, "allgather")
    out = np.empty((_state.size,) + a.shape, a.dtype)
    if _state.size > 1:
        _wait_request(_state.comm.Iallgather(a, out), "allgather")
    else:
        out[0] = a
    return out


def barrier() -> None:
    """Wait until every rank gets here (or fail after the timeout)."""
    _check_init("barrier")
    if _state.size > 1:
        _wait_request(_state.comm.Ibarrier(), "barrier")


def broadcast_text(text: str, root=0) -> str:
    """Rank ``root``'s string on every rank (for names chosen on one rank, such as an output folder)."""
    data = np.frombuffer(text.encode(), np.uint8) if _state.rank == root else np.empty(0, np.uint8)
    n = int(broadcast(np.array([data.size], np.int64), root)[0])
    buf = data if data.size == n else np.zeros(n, np.uint8)
    return bytes(broadcast(buf, root)).decode()


# -- GPU arrays: NCCL ------------------------------------------------------------------------------------------

def _nccl_module():
    from cupy.cuda import nccl

    return nccl


def _nccl_comm():
    """The NCCL communicator over every rank, made once: rank 0 draws the unique id, MPI carries it to the others."""
    if _state.nccl is None:
        nccl = _nccl_module()
        uid = nccl.get_unique_id() if _state.rank == 0 else None
        ids = np.array(uid if uid is not None else [0] * 128, np.int64)
        ids = broadcast(ids)
        _state.nccl = nccl.NcclCommunicator(_state.size, tuple(int(i) for i in ids), _state.rank)
    return _state.nccl


def _nccl_dtype(nccl, dtype):
    table = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64, "float16": nccl.NCCL_FLOAT16,
             "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64, "uint8": nccl.NCCL_UINT8}
    name = np.dtype(dtype).name
    if name not in table:
        raise TypeError(f"convkit.distributed: NCCL cannot carry dtype {name}")
    return table[name]


def _nccl_available() -> bool:
    try:
        nccl = _nccl_module()
    except ImportError:
        return False
    return bool(getattr(nccl, "available", True))


def nccl_allreduce_async(buf, op="sum"):
    """Start an in-place NCCL sum of the contiguous CuPy array ``buf`` on the current stream; returns an event
    recorded after it (wait for it with :func:`wait_event`)."""
    import cupy

    nccl = _nccl_module()
    ops = {"sum": nccl.NCCL_SUM, "mean": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
    stream = cupy.cuda.get_current_stream()
    _nccl_comm().allReduce(buf.data.ptr, buf.data.ptr, buf.size, _nccl_dtype(nccl, buf.dtype), ops[op], stream.ptr)
    event = cupy.cuda.Event(disable_timing=True)
    event.record(stream)
    return event


def wait_event(event, what: str) -> None:
    """Wait (with the timeout) until the GPU passed ``event``."""
    _wait(lambda: event.done, what)


def _gpu_collective(what, a, op="sum", root=0):
    """A collective on a CuPy array: NCCL when CuPy has it, else through host memory over MPI."""
    import cupy

    a = cupy.ascontiguousarray(a)
    if _state.size == 1:
        return cupy.stack([a]) if what == "allgather" else a.copy()
    if not _nccl_available():
        host = cupy.asnumpy(a)
        out = allreduce(host, op) if what == "allreduce" else broadcast(host, root) if what == "broadcast" \
            else allgather(host)
        return cupy.asarray(out)
    nccl = _nccl_module()
    stream = cupy.cuda.get_current_stream()
    if what == "allreduce":
        out = a.copy()
        wait_event(nccl_allreduce_async(out, op), "allreduce (NCCL)")
        return out
    comm, dt = _nccl_comm(), _nccl_dtype(nccl, a.dtype)
    if what == "broadcast":
        out = a.copy()
        comm.bcast(out.data.ptr, out.size, dt, root, stream.ptr)
    else:
        out = cupy.empty((_state.size,) + a.shape, a.dtype)
        comm.allGather(a.data.ptr, out.data.ptr, a.size, dt, stream.ptr)
    event = cupy.cuda.Event(disable_timing=True)
    event.record(stream)
    wait_event(event, f"{what} (NCCL)")
    return out


# -- sharding -----------------------------------------------------------------------------------------------------

def shard_bounds(n: int, rank_=None, size_=None) -> tuple[int, int]:
    """This rank's part [lo, hi) of ``n`` items: contiguous, in rank order, sizes differing by at most one;
    together the ranks cover 0..n-1 exactly once."""
    r = _state.rank if rank_ is None else rank_
    s = _state.size if size_ is None else size_
    return n * r // s, n * (r + 1) // s
