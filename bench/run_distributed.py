"""Data-parallel training speed on this machine, and a model of its communication cost on bigger ones.

    python bench/run_distributed.py [--model lenet5] [--ranks 1,2] [--steps 30] [--batch 128] [--out FILE]

Measured: for each rank count, mpirun starts that many processes (one thread each, OMP_NUM_THREADS=1) training
--model on random MNIST-shaped data with global batch --batch; it reports images/s, the scaling efficiency
(images/s over N times the 1-rank figure) and the seconds per step spent summing gradients (convkit's
GradientReducer: starting the bucket collectives and waiting for them).

Modelled (pure arithmetic): a ring allreduce of B bytes over N ranks moves 2 (N-1)/N B per rank in 2 (N-1) steps,
so it takes 2 (N-1) alpha + 2 (N-1)/N B / bandwidth. For 8 GPUs in one node the ring runs over NVLink; across
M nodes of 8 GPUs the sum is hierarchical: within each node, then a ring over the nodes' network links carrying
each node's B bytes, then back within the node. The table gives, for each zoo architecture, the gradient bytes
per step and the time of one allreduce: data-parallel scaling stops paying once a GPU's compute per step is not
well above it (at equal times, half the time goes to communication unless it overlaps the backward pass).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from result_file import out_help, result_path

ROOT = Path(__file__).resolve().parent.parent


def ring_seconds(nbytes: float, ranks: int, bandwidth: float, latency: float) -> float:
    """One ring allreduce of ``nbytes`` over ``ranks`` at ``bandwidth`` bytes/s per link and ``latency`` s a step."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) * latency + 2 * (ranks - 1) / ranks * nbytes / bandwidth


def hierarchical_seconds(nbytes, nodes, gpus_per_node, nvlink, net, nvlink_latency, net_latency) -> float:
    """Sum within each node (reduce-scatter + all-gather over NVLink), a ring over the nodes, and back."""
    return ring_seconds(nbytes, gpus_per_node, nvlink, nvlink_latency) + ring_seconds(nbytes, nodes, net, net_latency)


def comm_model(args) -> list[dict]:
    from convkit import zoo

    rows, seen = [], set()
    for name in zoo.names():
        params = sum(int(v.value.size) for v in zoo.build(name).trainable_weights)
        if params in seen:  # one row per architecture
            continue
        seen.add(params)
        nbytes = 4 * params
        row = {"model": name, "params": params, "bytes_per_step": nbytes,
               "one_node_8_gpus_us": 1e6 * ring_seconds(nbytes, 8, args.nvlink_gbs * 1e9, args.nvlink_latency_us * 1e-6)}
        for nodes in (2, 4, 8, 16, 32):
            row[f"{nodes}_nodes_us"] = 1e6 * hierarchical_seconds(
                nbytes, nodes, 8, args.nvlink_gbs * 1e9, args.net_gbps * 1e9 / 8, args.nvlink_latency_us * 1e-6,
                args.net_latency_us * 1e-6)
        rows.append(row)
    return rows


# -- measured ----------------------------------------------------------------------------------------------------

def mpirun_command(ranks: int, argv: list) -> tuple[list, dict]:
    """(command, environment) running ``python argv`` as ``ranks`` Open MPI processes on this machine alone:
    more processes than cores allowed, shared memory between them and loopback for the launcher, root allowed
    (containers and CI run as root), one thread per rank, convkit importable from this checkout."""
    cmd = ["mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,vader",
           "--mca", "btl_vader_single_copy_mechanism", "none", "--mca", "oob_tcp_if_include", "lo",
           sys.executable, *map(str, argv)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return cmd, env


def worker(args) -> None:
    """One rank of the measured run; rank 0 prints a JSON line."""
    import numpy as np

    from convkit import distributed, set_num_threads, set_random_seed, zoo

    distributed.init(device="cpu")
    set_num_threads(1)
    set_random_seed(0)
    model = zoo.build(args.model)
    n = args.batch * args.steps
    rng = np.random.default_rng(0)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model.fit(x[:args.batch * 2], y[:args.batch * 2], batch_size=args.batch, epochs=1, verbose=0, device="cpu")
    distributed.barrier()
    t0 = time.perf_counter()
    model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0, device="cpu")
    seconds = time.perf_counter() - t0
    stats = getattr(model, "_dp_stats", None) or {"comm_seconds": 0.0, "steps": args.steps, "bytes_per_step": 0}
    if distributed.is_chief():
        print(json.dumps({"ranks": distributed.size(), "images_per_s": n / seconds, "seconds": seconds,
                          "comm_ms_per_step": 1e3 * stats["comm_seconds"] / max(stats["steps"], 1),
                          "gradient_bytes_per_step": stats["bytes_per_step"]}))


def measure(args, ranks: int) -> dict:
    cmd, env = mpirun_command(ranks, [__file__, "--worker", "--model", args.model, "--steps", args.steps,
                                      "--batch", args.batch])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if res.returncode != 0:
        raise SystemExit(f"mpirun -np {ranks} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _table(measured, model_rows, args) -> str:
    lines = [f"Measured: {args.model}, global batch {args.batch}, {args.steps} steps, 1 thread per rank, CPU",
             f"{'ranks':>5} {'images/s':>10} {'efficiency':>10} {'allreduce ms/step':>18}"]
    base = measured[0]["images_per_s"] if measured and measured[0]["ranks"] == 1 else None
    for m in measured:
        eff = f"{m['images_per_s'] / (m['ranks'] * base):.2f}" if base else "-"
        lines.append(f"{m['ranks']:>5} {m['images_per_s']:>10.1f} {eff:>10} {m['comm_ms_per_step']:>18.3f}")
    lines += ["", f"Modelled ring allreduce of the gradients, microseconds per step (NVLink {args.nvlink_gbs:g} GB/s, "
              f"{args.nvlink_latency_us:g} us; network {args.net_gbps:g} Gb/s, {args.net_latency_us:g} us; 8 GPUs a node)",
              f"{'model':<18} {'params':>9} {'MB/step':>8} {'1x8 GPU':>8}" + "".join(f"{f'{n} nodes':>9}"
                                                                           for n in (2, 4, 8, 16, 32))]
    for r in model_rows:
        lines.append(f"{r['model']:<18} {r['params']:>9} {r['bytes_per_step'] / 1e6:>8.2f} "
                     f"{r['one_node_8_gpus_us']:>8.0f}" + "".join(f"{r[f'{n}_nodes_us']:>9.0f}" for n in (2, 4, 8, 16, 32)))
    return "\n".join(lines)


def _machine() -> dict:
    """Where and with what the figures were measured."""
    import platform

    import mpi4py
    from mpi4py import MPI

    import convkit
    from convkit._backend import device_name

    return {"date": time.strftime("%Y-%m-%d"), "machine": device_name("cpu"), "python": platform.python_version(),
            "convkit": convkit.__version__, "mpi4py": mpi4py.__version__,
            "mpi": MPI.Get_library_version().strip().splitlines()[0], "threads_per_rank": 1}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="lenet5", help="zoo model on 28x28x1 inputs (default lenet5)")
    p.add_argument("--ranks", default="1,2", help="rank counts to measure, e.g. 1,2 (empty: the model only)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=128, help="global batch")
    p.add_argument("--timeout", type=float, default=600, help="seconds each mpirun may take")
    p.add_argument("--nvlink-gbs", type=float, default=150.0, help="NVLink bandwidth a GPU reaches, GB/s")
    p.add_argument("--nvlink-latency-us", type=float, default=5.0)
    p.add_argument("--net-gbps", type=float, default=100.0, help="each node's network link, Gb/s")
    p.add_argument("--net-latency-us", type=float, default=10.0)
    p.add_argument("--out", help=out_help("distributed-cpu"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    measured = [measure(args, r) for r in ranks]
    rows = comm_model(args)
    table = _table(measured, rows, args)
    print(table)
    path = result_path(args.out, "distributed-cpu")
    path.write_text(json.dumps({"model": args.model, "batch": args.batch, "steps": args.steps, "measured": measured,
                                "comm_model": rows, "assumptions": {k: getattr(args, k) for k in (
                                    "nvlink_gbs", "nvlink_latency_us", "net_gbps", "net_latency_us")},
                                **_machine()}, indent=1))
    path.with_suffix(".txt").write_text(table + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
