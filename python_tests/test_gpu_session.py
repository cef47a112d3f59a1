"""bench/gpu_session.sh rehearsed on this machine, without a GPU (bench/gpu_rehearsal.py): every step
starts or says why not, stays in its budget and leaves its files in $OUT, also when the run is killed."""

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import gpu_rehearsal

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")


def rehearse(tmp_path, **env):
    return subprocess.Popen(["bash", str(gpu_rehearsal.SCRIPT), "--rehearse", "--quick", "--dir", str(tmp_path)],
                            env={**os.environ, "PYTHON": sys.executable, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_session(sid):
    """SIGKILL to every process of session ``sid``, as a command's time limit ends all it started."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            try:
                os.kill(int(stat.parent.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_quick_rehearsal_runs_every_step_within_its_budget(tmp_path):
    proc = rehearse(tmp_path)
    try:
        output, _ = proc.communicate(timeout=240)
    finally:
        kill_session(proc.pid)
    assert proc.returncode == 0, output[-4000:]
    out = tmp_path / "out"
    run = gpu_rehearsal.read_progress(out)
    assert run["device"] == "cpu" and run["budget"] == 60 and run["end"] <= 60
    assert run["steps"][:3] == ["probe", "build", "import"] and len(run["steps"]) == 15
    for step in run["steps"]:
        ev = run["events"][step]
        assert ("skipped" in ev) != ("start" in ev), (step, ev)
        if "start" in ev:
            assert ev["end"][2] <= ev["start"][1], (step, ev)  # took <= budget
    files = gpu_rehearsal.returned_files(out)
    assert len(files) <= 8 and {"progress.log", "env.txt", "gpu-session.tar.gz", "pytest-cuda.log"} <= set(files)
    summary = (out / "env.txt").read_text().split("| missing:")[-1]
    assert "keras" in summary and "cupy-cuda13x" in summary  # hidden as on the GPU machine / absent here
    started = {step for step in run["steps"] if "start" in run["events"][step]}
    with tarfile.open(out / "gpu-session.tar.gz") as tar:
        packed = {Path(name).name for name in tar.getnames()}
    assert {f"{s}.log" for s in started - {"probe", "cuda-tests"}} <= packed
    # Without Keras and a GPU, collection still succeeds and the CUDA cases skip.
    log = (out / "pytest-cuda.log").read_text()
    assert "ERROR" not in log and "error" not in log.splitlines()[-1]
    if run["events"]["kernels"].get("end", (None, 1))[1] == 0:
        assert "kernels-cpu.json" in files
    assert gpu_rehearsal.check(out) == []


def test_a_killed_run_has_returned_what_ran_before_the_kill(tmp_path):
    proc = rehearse(tmp_path, STEPS="probe build import checks memcheck kernels racecheck")
    progress = tmp_path / "out" / "progress.log"
    deadline = time.monotonic() + 150
    try:
        while not (progress.exists() and " kernels start " in progress.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-4000:]
            time.sleep(0.1)
        time.sleep(1)
    finally:
        kill_session(proc.pid)
    proc.wait()
    out = tmp_path / "out"
    run = gpu_rehearsal.read_progress(out)
    assert run["end"] is None and "end" not in run["events"]["kernels"]
    assert {"build.log", "import.log", "checks.log", "memcheck.log"} <= gpu_rehearsal.archived(out)
    assert (out / "env.txt").read_text()
    assert gpu_rehearsal.check(out, finished=False) == []


def test_check_names_what_is_wrong(tmp_path):
    (tmp_path / "progress.log").write_text(
        "[   0 s] # convkit GPU session | now | budget 60 s | device cpu | rehearsal no | steps: a b kernels d e\n"
        "[   0 s] a start budget 10 s, log a.log (in gpu-session.tar.gz)\n"
        "[  12 s] a done rc=0 in 12 s of 10: fine\n"
        "[  12 s] b start budget 10 s, log b.log (in gpu-session.tar.gz)\n"
        "[  13 s] b FAILED rc=1 in 1 s of 10: broken\n"
        "    | the last lines of its log\n"
        "[  13 s] kernels start budget 10 s, log kernels.log (in gpu-session.tar.gz)\n"
        "[  14 s] kernels done rc=0 in 1 s of 10: wrote it\n"
        "[  14 s] d skipped: 1 s left, needs 3\n"
        "[  70 s] # end: finished after 70 s of 60; 9 files\n")
    (tmp_path / "a.log").write_text("a\n")
    with tarfile.open(tmp_path / "gpu-session.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "a.log", arcname="./a.log")
        tar.add(tmp_path / "a.log", arcname="./kernels.log")
    (tmp_path / "a.log").unlink()
    for i in range(6):
        (tmp_path / f"extra{i}.txt").write_text("x")
    (tmp_path / "bad name").write_text("x")
    problems = gpu_rehearsal.check(tmp_path)
    assert any("9 files in $OUT" in p for p in problems)
    assert any(p.startswith("bad name:") for p in problems)
    assert "a: took 12 s of a 10 s budget" in problems
    assert "b: its log b.log is neither in $OUT nor in gpu-session.tar.gz" in problems
    assert "kernels: succeeded without leaving kernels-cpu.json in $OUT" in problems
    assert "e: neither started nor skipped" in problems
    assert "the run took 70 s of a 60 s budget" in problems
    assert len(problems) == 7, problems
