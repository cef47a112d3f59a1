"""Run by test_distributed.py under mpirun (and imported by it for the one-process reference).

    python dist_worker.py fit OUT CONFIGS_JSON   train each config; rank 0 writes OUT/<name>.npz
    python dist_worker.py nccl OUT GPUS           init and NCCL set-up against a stand-in CuPy with GPUS devices
    python dist_worker.py collectives OUT         each rank writes OUT/collectives-<rank>.json
"""

import json
import os
import sys
import types

import numpy as np

import convkit
from convkit import distributed, layers


def data(n, seed=1):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, 8, 8, 1)).astype(np.float32)
    y = r.integers(0, 4, n)
    return x, y


def build(kind):
    """'plain': conv, pool, dense; 'syncbn' / 'bn': with BatchNormalization synchronized or not."""
    body = [layers.Input((8, 8, 1)), layers.Conv2D(4, 3, use_bias=kind == "plain")]  # a bias before BN has no gradient
    if kind != "plain":
        body.append(layers.BatchNormalization(synchronized=kind == "syncbn", momentum=0.5))
    body += [layers.Activation("relu"), layers.MaxPooling2D(), layers.Flatten(), layers.Dense(4, activation="softmax")]
    return convkit.Sequential(body)


def run(cfg):
    """Train one config; returns (weights, history) as every rank ends it."""
    convkit.set_random_seed(cfg.get("seed", 0))
    model = build(cfg["kind"])
    model.compile(optimizer=convkit.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y = data(cfg["n"])
    xv, yv = data(cfg.get("n_val", 19), seed=2)
    kw = {"x": x, "y": y, "batch_size": cfg["batch"]}
    if cfg.get("dataset"):  # batches from a pipeline, the same on every rank: each takes its part of each
        kw = {"x": convkit.data.Dataset.from_tensor_slices((x, y)).batch(cfg["batch"])}
    hist = model.fit(**kw, epochs=cfg["epochs"], validation_data=(xv, yv), verbose=0, device=cfg.get("device"))
    return [w.numpy() for w in model.weights], {k: [float(v) for v in vs] for k, vs in hist.history.items()}


def fit_main(out, configs):
    for cfg in configs:
        distributed.init(timeout=60, bucket_mb=cfg.get("bucket_mb", 25))
        weights, history = run(cfg)
        mine = np.concatenate([w.ravel() for w in weights])
        agree = bool((distributed.allgather(mine) == mine).all())  # every rank holds the same weights
        if distributed.is_chief():
            np.savez(os.path.join(out, cfg["name"] + ".npz"), *weights)
            with open(os.path.join(out, cfg["name"] + ".json"), "w") as f:
                json.dump({"history": history, "ranks_agree": agree, "size": distributed.size()}, f)


def fake_cupy(gpus, calls):
    """Just enough of CuPy and its NCCL bindings to watch convkit.distributed choose a GPU and set up NCCL."""
    cupy = types.ModuleType("cupy")
    cuda = types.SimpleNamespace()
    current = {"device": None}

    class Device:
        def __init__(self, i=None):
            self.id = current["device"] if i is None else i

        def use(self):
            current["device"] = self.id

    class Array:  # its module is "cupy", so convkit takes it for a GPU array
        def __init__(self, a):
            self.a = np.ascontiguousarray(a)
            self.size, self.dtype, self.shape = self.a.size, self.a.dtype, self.a.shape
            self.data = types.SimpleNamespace(ptr=self.a.ctypes.data)

        def copy(self):
            return Array(self.a.copy())

    Array.__module__ = "cupy"

    class Event:
        done = True

        def __init__(self, **kw):
            pass

        def record(self, stream):
            calls.append(["event", stream.ptr])

    class Communicator:
        def __init__(self, ndev, uid, rank):
            calls.append(["comm", ndev, list(uid), rank])

        def allReduce(self, send, recv, count, dtype, op, stream):
            calls.append(["allReduce", send == recv, count, dtype, op, stream])

    nccl = types.ModuleType("cupy.cuda.nccl")
    nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT64, nccl.NCCL_FLOAT16 = 7, 8, 6
    nccl.NCCL_INT32, nccl.NCCL_INT64, nccl.NCCL_UINT8, nccl.NCCL_SUM, nccl.NCCL_MAX, nccl.NCCL_MIN = 2, 4, 1, 0, 2, 3
    nccl.get_unique_id = lambda: tuple(int(v) for v in np.random.default_rng().integers(-128, 128, 128))
    nccl.NcclCommunicator = Communicator
    cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: gpus)
    cuda.Device, cuda.Event, cuda.nccl = Device, Event, nccl
    cuda.get_current_stream = lambda: types.SimpleNamespace(ptr=4242)
    cupy.cuda, cupy.ndarray, cupy.ascontiguousarray = cuda, Array, lambda a: a
    return cupy, nccl, current, Array


def nccl_main(out, gpus):
    calls = []
    cupy, nccl, current, Array = fake_cupy(gpus, calls)
    sys.modules.update({"cupy": cupy, "cupy.cuda": cupy.cuda, "cupy.cuda.nccl": nccl})
    distributed.init(timeout=60, device="auto")
    buf = Array(np.ones(10, np.float32))
    distributed.nccl_allreduce_async(buf)
    report = {"rank": distributed.rank(), "local_rank": distributed.local_rank(), "gpu": distributed._state.gpu,
              "current": current["device"], "calls": calls}
    reports = distributed.allgather(np.frombuffer(json.dumps(report).ljust(4096).encode(), np.uint8))
    if distributed.is_chief():
        with open(os.path.join(out, "nccl.json"), "w") as f:
            json.dump([json.loads(bytes(r).decode()) for r in reports], f)


def collectives_main(out):
    distributed.init(timeout=60, device="cpu")
    r = distributed.rank()
    distributed.barrier()
    report = {"rank": r, "size": distributed.size(), "local_rank": distributed.local_rank(),
              "chief": distributed.is_chief(),
              **{op: distributed.allreduce(np.array([r + 1.0, 2.0]), op).tolist() for op in ("sum", "mean", "max", "min")},
              "int_sum": distributed.allreduce(np.array([r + 1], np.int64)).tolist(),
              "broadcast": distributed.broadcast(np.arange(3) * (r + 1), root=1).tolist(),
              "allgather": distributed.allgather(np.array([r, 10 * r])).tolist(),
              "text": distributed.broadcast_text(f"from rank {r}")}
    with open(os.path.join(out, f"collectives-{r}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    what, out = sys.argv[1], sys.argv[2]
    if what == "fit":
        fit_main(out, json.loads(sys.argv[3]))
    elif what == "nccl":
        nccl_main(out, int(sys.argv[3]))
    else:
        collectives_main(out)
