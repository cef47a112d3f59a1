"""bench/run_kernels.py: its GPU timer on a simulated GPU (no GPU needed), its shape lists, and a
smoke run of its depthwise table."""

import contextlib
import json

import pytest

pytest.importorskip("torch")  # the benchmark's peer
import run_kernels  # noqa: E402
import spec_shapes  # noqa: E402


class SimulatedGpu:
    """A host clock and one in-order GPU queue: queueing a call costs the host ``dispatch`` seconds,
    and the GPU runs it for its own duration once it gets there; events are the times the GPU
    reaches them. The interface is run_kernels.CudaStream's."""

    def __init__(self, dispatch):
        self.dispatch, self.host, self.busy_until = dispatch, 0.0, 0.0

    def launch(self, seconds):
        self.host += self.dispatch
        self.busy_until = max(self.busy_until, self.host) + seconds

    def using(self):
        return contextlib.nullcontext()

    def now(self):
        return self.host

    def spin(self, seconds):
        self.launch(seconds)

    def record(self):
        self.host += 1e-6
        self.busy_until = max(self.busy_until, self.host)
        return self.busy_until

    def done(self, event):
        return event <= self.host

    def elapsed_ms(self, e0, e1):
        self.host = max(self.host, e1)
        return (e1 - e0) * 1e3

    def synchronize(self):
        self.host = max(self.host, self.busy_until)


def test_the_simulation_shows_what_events_around_one_call_measure():
    gpu = SimulatedGpu(dispatch=40e-6)
    gpu.synchronize()
    e0 = gpu.record()
    gpu.launch(5e-6)
    ms = gpu.elapsed_ms(e0, gpu.record())
    assert ms == pytest.approx(0.045)  # mostly host dispatch, not the 5 us kernel


@pytest.mark.parametrize("dispatch", [1e-6, 40e-6, 300e-6])
def test_cuda_timer_measures_the_kernels_not_host_dispatch(dispatch):
    gpu = SimulatedGpu(dispatch)
    timer = run_kernels.CudaTimer(min_time=0.01, min_reps=5, gpu=gpu)
    got = timer.run({"ours": lambda: gpu.launch(5e-6), "peer": lambda: (gpu.launch(15e-6), gpu.launch(5e-6))})
    assert got["ours"] == pytest.approx(0.005, rel=1e-6)
    assert got["peer"] == pytest.approx(0.020, rel=1e-6)
    assert timer.uncovered == 0
    if dispatch * timer.max_calls > 1e-3:  # the first spin (1 ms) could not outlast the queueing
        assert timer.missed > 0


def test_cuda_timer_fills_its_window_within_max_calls():
    gpu = SimulatedGpu(10e-6)  # 50 calls queue within the first spin: no sample is retaken
    calls = {"short": 0, "long": 0}

    def call(name, seconds):
        calls[name] += 1
        gpu.launch(seconds)

    timer = run_kernels.CudaTimer(min_time=0.0, min_reps=3, window_ms=1.0, max_calls=50, gpu=gpu)
    got = timer.run({"short": lambda: call("short", 2e-6), "long": lambda: call("long", 0.4e-3)})
    assert got == pytest.approx({"short": 0.002, "long": 0.4}, rel=1e-6)
    # Two warm-up calls, one call to size the samples, then three samples of 50 and of 3 calls.
    assert calls == {"short": 2 + 1 + 3 * 50, "long": 2 + 1 + 3 * 3}
    assert timer.missed == 0


def test_cuda_timer_counts_samples_it_could_not_cover():
    gpu = SimulatedGpu(10e-6)

    def synchronising_op():  # waits for the GPU, so nothing can queue behind the spin
        gpu.launch(5e-6)
        gpu.synchronize()

    timer = run_kernels.CudaTimer(min_time=0.0, min_reps=2, gpu=gpu)
    timer.run({"ours": synchronising_op})
    assert timer.uncovered == 3  # the sizing sample and two timed ones, each after 4 tries
    assert timer.missed == 3 * 4


def test_distinct_merges_the_models_that_share_a_shape():
    got = run_kernels.distinct([("a", 1, 2), ("b", 3, 4), ("c", 1, 2)])
    assert got == [("a+c", 1, 2), ("b", 3, 4)]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_conv_shapes_hold_every_layer_once(device):
    shapes = run_kernels.conv_shapes(device)
    assert len({s[1:] for s in shapes}) == len(shapes)
    want = {s[1:] for s in spec_shapes.CONV}
    if device == "cuda":
        want |= {(512, *s[2:]) for s in spec_shapes.CONV}
    assert {s[1:] for s in shapes} == want
    names = {m for s in shapes for m in s[0].split("+")}
    assert {s[0] for s in spec_shapes.CONV} <= names
    if device == "cuda":
        assert "lenet5@512+lenet5_subclassed@512" in {s[0] for s in shapes}
        assert "fashion1@512" not in names  # fashion1 is at batch 512 already


def _smoke_run(out, only, limit):
    """run_kernels.main on the first ``limit`` shapes of one table, one thread, one repeat; its exit status and
    rows (the threads of both libraries restored after)."""
    import torch

    import convkit

    before = convkit.get_num_threads(), torch.get_num_threads()
    try:
        code = run_kernels.main(["--only", only, "--limit", str(limit), "--min-time", "0", "--min-reps", "1",
                                 "--threads", "1", "--out", str(out)])
    finally:
        convkit.set_num_threads(before[0])
        torch.set_num_threads(before[1])
    return code, json.loads(out.read_text())["rows"]


def test_depthwise_table_runs_and_checks_against_torch(tmp_path):
    """--only depthwise on its first two shapes: every result passes its check against PyTorch (TensorFlow's
    padding applied explicitly) and the JSON holds the rows."""
    code, rows = _smoke_run(tmp_path / "kernels.json", "depthwise", 2)
    assert code == 0 and len(rows) == 6 and all(r["ok"] and r["kind"] == "depthwise" for r in rows)
    assert {r["shape"] for r in rows} == {"1x112x112x32 k3 s1", "1x112x112x64 k3 s2"}


def test_conv_rows_carry_the_peak_measured_beside_them(tmp_path):
    """--only conv on one shape: each row holds the float32 peak measured right after it, and the table
    prints the share; the summary counts the large layers (fabricated rows, exact thresholds)."""
    out = tmp_path / "kernels.json"
    code, rows = _smoke_run(out, "conv", 1)
    assert code == 0 and len(rows) == 3 and all(r["peak_gflops"] > r["gflops"] / 4 > 0 for r in rows)
    assert "%peak" in out.with_suffix(".txt").read_text().splitlines()[1]
    fake = [dict(kind="conv", gflop=g, real_gflop=g / 2, gflops=rate, peak_gflops=100.0)
            for g, rate in ((2.0, 70.0), (1.0, 69.9), (0.99, 95.0), (5.0, 160.0))]
    share = run_kernels.peak_share(fake + [dict(kind="pool")])
    assert share == {"large_conv_cases": 3, "nominal": {"at_70%_of_peak": 2, "median_share_of_peak": 0.7},
                     "real": {"at_70%_of_peak": 1, "median_share_of_peak": 0.35}}


@pytest.mark.parametrize("size,ks,padding,want", [(5, 3, "same", 2 + 3 + 3 + 3 + 2), (5, 3, "valid", 9),
                                                  (1, 3, "same", 1), (4, 5, "same", 3 + 4 + 4 + 3)])
def test_inside_taps_counts_the_window_inside_the_image(size, ks, padding, want):
    assert run_kernels._inside_taps(size, ks, padding) == want


def _distinct_cores() -> bool:
    """Whether the first two CPUs this process may use are different cores (not SMT siblings of one)."""
    import os

    cpus = sorted(os.sched_getaffinity(0))[:2]
    try:
        with open(f"/sys/devices/system/cpu/cpu{cpus[0]}/topology/thread_siblings_list") as f:
            return len(cpus) == 2 and str(cpus[1]) not in f.read().replace("-", ",").split(",")
    except OSError:
        return False


def test_peak_is_measured_per_thread_and_checks_its_argument():
    """Two threads on two cores count both cores (the best of three short measurements each), and a vector
    unit does more than twice the work of the portable loop (CONVKIT_CPU_KERNEL=generic)."""
    import os
    import subprocess
    import sys

    import convkit
    from convkit import _cpu

    before = convkit.get_num_threads()
    try:
        convkit.set_num_threads(1)
        one = max(_cpu.peak_gflops(0.05) for _ in range(3))
        convkit.set_num_threads(2)
        two = max(_cpu.peak_gflops(0.05) for _ in range(3))
    finally:
        convkit.set_num_threads(before)
    assert one > 0
    if _distinct_cores():
        assert 1.2 * one < two < 2.5 * one
    with pytest.raises(ValueError, match="min_seconds must be in"):
        _cpu.peak_gflops(0)
    if _cpu.micro_kernel() != "generic":
        code = "import convkit; convkit.set_num_threads(1); print(convkit._cpu.peak_gflops(0.05))"
        generic = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       env={**os.environ, "CONVKIT_CPU_KERNEL": "generic"}).stdout)
        assert one > 2 * generic
