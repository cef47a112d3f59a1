"""Two installed versions of convkit, training and predicting the same models, side by side in one run.

    python bench/compare_versions.py BEFORE_PYTHON AFTER_PYTHON [--models lenet5 mnist_cnn]

Each interpreter has its own convkit installed (e.g. a venv per checkout); both run this checkout's
benchmark worker (bench/run_training.py), so the same model, batches and recipe are timed. Windows
alternate between the two processes (bench/workers.py) under the same allocator, which shows a
change of a few percent that runs taken one after the other would drown in the machine's drift.
bench/compare_builds.py does the same for two builds of the CPU module in one process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from result_file import out_help, result_path
from run_training import MODELS, write_results
from workers import ALLOCATORS, Worker, allocator_env, interleaved

HERE = Path(__file__).resolve().parent


def version_of(python) -> str:
    """The convkit version and checkout commit that ``python`` imports."""
    probe = ("import convkit, os, subprocess; d = os.path.dirname(convkit.__file__); "
             "c = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=d, capture_output=True, text=True); "
             "print(convkit.__version__, c.stdout.strip() or '?')")
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd="/")
    except OSError as exc:
        raise SystemExit(f"error: {python} cannot import convkit: {exc}") from None
    if out.returncode != 0:
        raise SystemExit(f"error: {python} cannot import convkit:\n{out.stderr[-2000:]}")
    return out.stdout.strip()


def paired_ratio(before: list, after: list) -> float:
    """The median over rounds of after/before within each round: windows of one round ran back to back,
    so a machine that drifts between rounds (seen here: 35% within a minute) cancels out."""
    return statistics.median(a / b for a, b in zip(after, before))


def row_of(name, before, after) -> dict:
    return {"model": name, "batch": MODELS[name], "before": before, "after": after,
            **{f"{what}_ratio": paired_ratio(before[f"{what}_windows"], after[f"{what}_windows"])
               for what in ("train", "infer")}}


def line_of(row) -> str:
    b, a = row["before"], row["after"]
    return (f"{row['model']:<13} {b['train_img_s']:>12.0f} {a['train_img_s']:>9.0f} {row['train_ratio']:>6.3f} "
            f"{b['infer_img_s']:>12.0f} {a['infer_img_s']:>9.0f} {row['infer_ratio']:>6.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", help="a Python with the older convkit")
    p.add_argument("after", help="a Python with the newer convkit")
    p.add_argument("--models", nargs="+", default=["lenet5", "mnist_cnn"], choices=list(MODELS))
    p.add_argument("--threads", type=int, default=0, help="threads for both (default: all cores)")
    p.add_argument("--min-window", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--allocator", choices=ALLOCATORS, default="glibc-kept")
    p.add_argument("--out", help=out_help("versions-cpu"))
    args = p.parse_args(argv)
    versions = {"before": version_of(args.before), "after": version_of(args.after)}
    info = {"versions": versions, "threads": args.threads or "all", "rounds": args.rounds,
            "allocator": args.allocator}
    lines = [f"# before {versions['before']} | after {versions['after']} | allocator {args.allocator} | "
             f"images/s: median of {args.rounds} interleaved windows; ratio after/before: median over rounds of "
             "the ratio within each round",
             f"{'model':<13} {'train before':>12} {'after':>9} {'ratio':>6} {'infer before':>12} {'after':>9} "
             f"{'ratio':>6}"]
    print("\n".join(lines), flush=True)
    rows = []
    for name in args.models:
        common = ["--worker", "convkit", "--models", name, "--min-window", str(args.min_window)]
        common += ["--threads", str(args.threads)] if args.threads else []
        workers = {}
        try:
            for label, python in (("before", args.before), ("after", args.after)):
                workers[label] = Worker(f"{label} {name}", [python, str(HERE / "run_training.py")] + common,
                                        allocator_env(args.allocator))
        except BaseException:
            for w in workers.values():
                w.kill()
            raise
        res = interleaved(workers, args.rounds)
        row = row_of(name, res["before"], res["after"])
        rows.append(row)
        line = line_of(row)
        lines.append(line)
        print(line, flush=True)
    write_results(result_path(args.out, "versions-cpu"), info, rows, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
