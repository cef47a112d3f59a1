"""What fit does when convkit.distributed is active: equal start, gradient buckets, reduced metrics.

Each rank computes the gradient of its share of the global batch's mean loss (the loss gradient scaled by
local/global batch size), so the sum over ranks is the gradient of the global batch exactly as one process
would compute it. Buckets of gradients (in reverse weight order, about the order backward finishes them) are
summed by non-blocking collectives started as soon as every layer owning them has finished its backward.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from convkit import distributed
from convkit._backend import is_cupy
from convkit._device import device_of, to_device, to_numpy, xp_of


class _Bucket:
    __slots__ = ("variables", "owners", "nbytes")

    def __init__(self):
        self.variables, self.owners, self.nbytes = [], set(), 0


def _leaf_layers(model):
    """Every layer reachable from ``model`` (sub-models included), each once."""
    out, seen, todo = [], set(), [model]
    while todo:
        layer = todo.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        out.append(layer)
        todo.extend(getattr(layer, "_layers", []))
    return out


class GradientReducer:
    """Sums the trainable weights' gradients over every rank, bucket by bucket, during backward.

    It watches the tape (``start`` before backward, ``done(layer)`` after each recorded call is replayed) and
    starts a bucket's collective once every layer owning its weights is finished. Buckets always start in the
    same order on every rank, as MPI and NCCL require.
    """

    def __init__(self, model):
        self.model = model
        self.scale = 1.0
        self.synced = False  # whether the ranks' weights were made equal (fit's first step does it)
        self.buckets = None
        self.stats = {"steps": 0, "comm_seconds": 0.0, "bytes_per_step": 0, "buckets": 0}
        self._last_event = None
        self._reset()

    def _reset(self):
        self._handles, self._ready, self._next, self._remaining = [], [], 0, Counter()

    def _layout(self):
        variables = self.model.trainable_weights
        owners = {}
        for layer in _leaf_layers(self.model):
            for v in layer._weights:
                owners.setdefault(id(v), set()).add(id(layer))
        self.buckets, bucket = [], _Bucket()
        for v in reversed(variables):
            if bucket.variables and bucket.nbytes + v.value.nbytes > distributed._state.bucket_bytes:
                self.buckets.append(bucket)
                bucket = _Bucket()
            bucket.variables.append(v)
            bucket.owners |= owners.get(id(v), set())
            bucket.nbytes += v.value.nbytes
        if bucket.variables:
            self.buckets.append(bucket)
        self.layer_buckets = {}
        for i, b in enumerate(self.buckets):
            for owner in b.owners:
                self.layer_buckets.setdefault(owner, []).append(i)
        self.stats["buckets"] = len(self.buckets)
        self.stats["bytes_per_step"] = sum(b.nbytes for b in self.buckets)

    def begin_step(self, local: int, global_: int):
        """A new step in which this rank holds ``local`` of the global batch's ``global_`` examples."""
        self.scale = local / global_
        self._reset()

    # the tape's watcher --------------------------------------------------------------------------------------
    def start(self, entries):
        """Backward is about to replay ``entries``."""
        if self.buckets is None:
            self._layout()
        self._remaining = Counter(id(e.layer) for e in entries)
        self._waiting = [{o for o in b.owners if self._remaining[o]} for b in self.buckets]
        self._ready = [not w for w in self._waiting]  # weights no call uses: ready (zero) from the start

    def done(self, layer):
        """One recorded call of ``layer`` has been replayed."""
        lid = id(layer)
        self._remaining[lid] -= 1
        if self._remaining[lid]:
            return
        for i in self.layer_buckets.get(lid, ()):
            self._waiting[i].discard(lid)
            self._ready[i] = not self._waiting[i]
        t0 = time.perf_counter()
        while self._next < len(self.buckets) and self._ready[self._next]:
            self._launch(self._next)
        self.stats["comm_seconds"] += time.perf_counter() - t0

    # collectives -----------------------------------------------------------------------------------------------
    def _launch(self, i):
        variables = self.buckets[i].variables
        xp = xp_of(variables[0].value)
        buf = xp.concatenate([(v.grad if v.grad is not None else xp.zeros(v.shape, np.float32)).ravel()
                              for v in variables]).astype(np.float32, copy=False)
        if is_cupy(buf) and distributed._nccl_available():
            self._handles.append(("nccl", buf, distributed.nccl_allreduce_async(buf)))
        else:
            host = to_numpy(buf) if is_cupy(buf) else buf
            req = distributed._state.comm.Iallreduce(distributed._mpi().IN_PLACE, host, op=distributed._mpi().SUM)
            self._handles.append(("mpi", host, req))
        self._next = i + 1
        for kind, _, req in self._handles:  # let MPI progress the collectives already started
            if kind == "mpi":
                req.Test()

    def finish(self):
        """Start the buckets not started yet, wait for all, and leave the summed gradients in ``Variable.grad``."""
        if self.buckets is None:
            self._layout()
        t0 = time.perf_counter()
        while self._next < len(self.buckets):
            self._launch(self._next)
        event = None
        for bucket, (kind, buf, req) in zip(self.buckets, self._handles):
            if kind == "mpi":
                distributed._wait_request(req, "the gradient allreduce")
            else:
                event = req
            dev = device_of(bucket.variables[0].value)
            buf = to_device(buf, dev) if device_of(buf) != dev else buf
            offset = 0
            for v in bucket.variables:
                n = int(np.prod(v.shape))
                v.grad = buf[offset:offset + n].reshape(v.shape)
                offset += n
        # NCCL runs on the stream: check the previous step's sums finished (one step of slack keeps the GPU busy)
        if self._last_event is not None:
            distributed.wait_event(self._last_event, "the gradient allreduce (NCCL)")
        self._last_event = event
        self._reset()
        self.stats["steps"] += 1
        self.stats["comm_seconds"] += time.perf_counter() - t0


# -- the rest of fit's agreement between ranks ---------------------------------------------------------------------

def _flat(arrays):
    return np.concatenate([to_numpy(a).astype(np.float64).ravel() for a in arrays]) if arrays else np.zeros(0)


def _unflat(flat, variables):
    offset = 0
    for v in variables:
        n = int(np.prod(v.shape))
        v.value[...] = to_device(flat[offset:offset + n].reshape(v.shape), device_of(v.value), np.float32)
        offset += n


def sync_model(model):
    """Every weight, and the optimizer's step count and slots, as rank 0 has them."""
    variables = model.weights
    _unflat(distributed.broadcast(_flat([v.value for v in variables])), variables)
    opt = model.optimizer
    if opt is None:
        return
    trainable = model.trainable_weights
    state = opt.get_state(trainable)
    iterations = int(distributed.broadcast(np.asarray([state[0]], np.int64))[0])
    if iterations == 0:  # rank 0's optimizer has not stepped: nothing to share (every rank decides alike)
        return
    slots = distributed.broadcast(_flat(state[1:]))
    arrays, offset = [np.asarray(iterations, np.int64)], 0
    for a in state[1:]:
        arrays.append(slots[offset:offset + a.size].reshape(a.shape).astype(np.float32))
        offset += a.size
    opt.set_state(trainable, arrays)


def average_non_trainable(model):
    """Moving statistics (BatchNormalization's) averaged over the ranks, so every rank validates and saves alike."""
    variables = [v for v in model.weights if not v.trainable]
    if variables:
        _unflat(distributed.allreduce(_flat([v.value for v in variables]), "mean"), variables)


def reduce_metrics(trackers):
    """Each metric's running total and count summed over the ranks."""
    local = np.array([x for t in trackers for x in (float(t.total), float(t.count))], np.float64)
    summed = distributed.allreduce(local)
    for i, t in enumerate(trackers):
        t.total, t.count = summed[2 * i], summed[2 * i + 1]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any."""
    return bool(distributed.allreduce(np.array([int(bool(flag))], np.int64), "max")[0])


def synchronized_layers(model):
    return [l for l in _leaf_layers(model) if getattr(l, "synchronized", False)]
