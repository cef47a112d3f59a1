"""Benchmark workers: each framework configuration in a process of its own, timed in interleaved windows.

A fair comparison gives every process the same environment and the same chances. The parent
starts one long-lived worker per configuration (convkit, PyTorch NCHW, PyTorch channels_last,
Keras with and without compilation), each builds and warms up its model, then the parent asks
them in turn for one timed window at a time, round after round, so that a drift of the machine
(another process, clock changes) falls on every configuration alike; the median of the rounds is
the result. Only the worker being asked runs; the others wait on a pipe.

Allocators: convkit asks glibc's malloc to keep freed blocks (mallopt: mmap threshold 64 MiB, trim
threshold 1 GiB). ``allocator_env('glibc-kept')`` gives every process the same settings through
glibc's environment variables, 'tcmalloc' / 'jemalloc' preload that allocator into every process,
and 'default' leaves glibc as it is (convkit still calls mallopt then: not a fair comparison).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ALLOCATORS = ("glibc-kept", "tcmalloc", "jemalloc", "default")
_TAG = "@@worker "  # protocol lines; anything else a library prints on stdout is ignored


def allocator_env(name: str) -> dict:
    """Environment variables that give a process the allocator ``name`` (see the module's docstring)."""
    if name == "glibc-kept":
        return {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
    if name == "default":
        return {}
    if name not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {ALLOCATORS}, got {name!r}")
    lib = ctypes.util.find_library(name)  # a soname such as libtcmalloc.so.4, which LD_PRELOAD resolves
    if lib is None:
        raise SystemExit(f"error: allocator {name} not found (apt-get install libgoogle-perftools4 for tcmalloc, "
                         "libjemalloc2 for jemalloc)")
    return {"LD_PRELOAD": lib}


def allocator_seen() -> dict:
    """What this process was started with, for the result file: the allocator variables it sees."""
    keys = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD", "GLIBC_TUNABLES")
    return {k: os.environ[k] for k in keys if k in os.environ}


def serve(train, infer, sync, x, y, losses, min_window, info, label):
    """The worker's side: check the warm-up, fix how many passes make a window of at least
    ``min_window`` seconds, say ready (with ``info``), then answer 'train' / 'infer' with one timed
    window's images/s until 'done', which answers the process's peak resident memory."""
    if not losses[-1] < losses[0]:
        raise AssertionError(f"{label}: the loss did not drop over warm-up ({losses})")

    def rate(fn, *args):
        t0 = time.perf_counter()
        fn(*args)
        sync()
        return len(args[0]) / (time.perf_counter() - t0)

    reps = {"train": max(1, round(min_window * rate(train, x, y) / len(x) + 0.5)),
            "infer": max(1, round(min_window * rate(infer, x) / len(x) + 0.5))}
    window = {"train": lambda: rate(lambda a, b: [train(a, b) for _ in range(reps["train"])], x, y) * reps["train"],
              "infer": lambda: rate(lambda a: [infer(a) for _ in range(reps["infer"])], x) * reps["infer"]}
    _say({"ready": True, "warmup_losses": [float(v) for v in losses], "allocator": allocator_seen(), **info})
    for line in sys.stdin:
        what = line.strip()
        if what == "done":
            break
        _say({"img_s": window[what]()})
    _say({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _say(obj):
    print(_TAG + json.dumps(obj), flush=True)


class Worker:
    """The parent's handle on one worker process (``cmd``), started with ``env`` added to its own."""

    def __init__(self, name, cmd, env):
        self.name = name
        self._err = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                                      text=True, env={**os.environ, **env})
        self.info = self._read()
        self.windows = {"train": [], "infer": []}

    def _read(self) -> dict:
        for line in self._proc.stdout:
            if line.startswith(_TAG):
                return json.loads(line[len(_TAG):])
        self._proc.wait()
        self._err.seek(0)
        raise RuntimeError(f"{self.name} failed (exit status {self._proc.returncode}):\n{self._err.read()[-3000:]}")

    def window(self, what):
        self._proc.stdin.write(what + "\n")
        self._proc.stdin.flush()
        self.windows[what].append(self._read()["img_s"])

    def finish(self) -> dict:
        """Ends the worker; its info, per-window rates, their medians and its peak memory."""
        self._proc.stdin.write("done\n")
        self._proc.stdin.flush()
        rss = self._read()["peak_rss_mib"]
        self._proc.wait()
        self._err.close()
        return {**self.info, "train_windows": self.windows["train"], "infer_windows": self.windows["infer"],
                "train_img_s": statistics.median(self.windows["train"]),
                "infer_img_s": statistics.median(self.windows["infer"]), "peak_rss_mib": rss}

    def kill(self):
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def interleaved(workers: dict, rounds: int) -> dict:
    """Round after round, one training window of every worker, then one inference window of every
    worker (the order rotating each round); returns each worker's ``finish()``."""
    names = list(workers)
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for what in ("train", "infer"):
                for name in order:
                    workers[name].window(what)
        return {name: w.finish() for name, w in workers.items()}
    finally:
        for w in workers.values():
            w.kill()
