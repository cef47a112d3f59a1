"""The accuracy table of docs/RESULTS.md, made from the metrics files of real training runs.

    python bench/accuracy_table.py --add runs/lenet5-20261122-101500   # keep a run's metrics.json
    python bench/accuracy_table.py                                     # rewrite the table in docs/RESULTS.md
    python bench/accuracy_table.py --check                             # exit 1 when the table is stale

Each kept run lives in docs/results/<model>/seed-<seed>.json (<model>+<schedule>/ when run with
another --lr-schedule than the recipe's) exactly as `python -m convkit.train` wrote it (command,
machine, date, epochs, wall time, per-epoch history). A row is the mean and standard deviation over
a recipe's seeds, and a target counts as met only when the mean meets it over enough seeds; the
table is only ever derived from those files, so the two cannot disagree.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "docs" / "results"
RESULTS_MD = ROOT / "docs" / "RESULTS.md"
BEGIN, END = "<!-- accuracy table: made by bench/accuracy_table.py -->", "<!-- end of accuracy table -->"

# Test accuracy each recipe must reach: the notes' figure for LeNet-5 and the MNIST CNN (on MNIST and
# on Fashion-MNIST); within 0.5 points of it for Fashion models 1-3, whose figures are single runs.
TARGETS = {
    "lenet5": 0.9905, "mnist_cnn": 0.9939, "mnist_cnn_aug": 0.9939, "fashion_cnn": 0.9325,
    "fashion_cnn_aug": 0.9325,
    "fashion1": 0.9013, "fashion2": 0.9102, "fashion3": 0.9178, "fashion3_aug": 0.9151,
}
TARGETS["lenet5_aug"] = TARGETS["lenet5"]
TARGETS["mnist_speedrun"] = 0.99  # the speed run's (bench/time_to_accuracy.py --speedrun), in one epoch
# Seeds a mean needs: single runs of these differ by more than the margins they are judged by.
SEEDS = {"lenet5": 5, "lenet5_aug": 5, "mnist_cnn": 5, "mnist_speedrun": 5}
MIN_SEEDS = 3
NO_DATA = {"cifar10": "no data yet (CIFAR-10 is on no package registry; see the README to supply it)"}


def load_runs(folder: Path | None = None) -> dict:
    """record name -> {seed: metrics} from docs/results/<record>/seed-<seed>.json."""
    runs = {}
    for p in sorted((folder or RESULTS_DIR).glob("*/seed-*.json")):
        m = json.loads(p.read_text())
        runs.setdefault(p.parent.name, {})[m["seed"]] = m
    return runs


def seeds_needed(model: str) -> int:
    return SEEDS.get(model, MIN_SEEDS)


def record_name(run: dict) -> str:
    """``model``, or ``model+schedule`` for a run whose schedule is not the recipe's."""
    from convkit import zoo

    default = zoo.recipe(run["model"]).lr_schedule or "constant"
    schedule = run.get("lr_schedule", default)
    return run["model"] if schedule == default else f"{run['model']}+{schedule}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _command(run: dict) -> str:
    """The run's command with its seed as S, the seeds being listed in their own column."""
    return re.sub(r" --seed[ =]\d+", "", run["command"]).replace("python -m convkit.train", "", 1).strip()


def _row(label, dataset, r, target, model, seeds: dict) -> str:
    accs = [m["test_accuracy"] for _, m in sorted(seeds.items())]
    mean = statistics.fmean(accs)
    sd = f" ± {statistics.stdev(accs) * 100:.2f}" if len(accs) > 1 else ""
    need = seeds_needed(model)
    if target is None:
        met = "-"
    elif len(accs) < need:
        met = f"not yet ({len(accs)} of {need} seeds)"
    else:
        met = "yes" if mean >= target else "**no**"
    runs = list(seeds.values())
    epochs = sorted({f"{m['epochs_run']}/{m['epochs']}" for m in runs})
    machines = sorted({f"{m['machine']}, {m['threads']} thread{'s' * (m['threads'] != 1)}, {m['device']}" for m in runs})
    minutes = _minutes(statistics.fmean(m["train_seconds"] for m in runs))
    return (f"| {label} | {dataset} | {r.reported or '-'} | {f'{target:.2%}' if target else '-'} "
            f"| {mean:.2%}{sd} | {', '.join(map(str, sorted(seeds)))} | {met} | {', '.join(epochs)} | {minutes} "
            f"| {'; '.join(machines)} | {max(m['date'] for m in runs)} "
            f"| `python -m convkit.train {_command(runs[0])} --seed S` |")


def render(runs: dict) -> str:
    from convkit import zoo

    head = ("| model | data | the notes report | target | convkit test acc., mean ± sd (points) | seeds S | met "
            "| epochs | train time (mean) | machine | date | command |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in zoo.names():
        r = zoo.recipe(name)
        target = TARGETS.get(name)
        records = [(key, seeds) for key, seeds in sorted(runs.items()) if key.split("+")[0] == name]
        if not records:
            why = NO_DATA.get(r.dataset, "not run yet")
            lines.append(f"| {name} | {r.dataset} | {r.reported or '-'} | {f'{target:.2%}' if target else '-'} "
                         f"| {why} | | | | | | | |")
        for key, seeds in sorted(records, key=lambda kr: kr[0] != name):  # the recipe's own schedule first
            label = name if key == name else f"{name}, {key.split('+')[1]} schedule"
            lines.append(_row(label, r.dataset, r, target, name, seeds))
    return "\n".join(lines)


def updated_markdown(text: str, table: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"{RESULTS_MD.name} lacks the markers {BEGIN!r} and {END!r}")
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    return f"{before}{BEGIN}\n{table}\n{END}{after}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--add", nargs="*", default=[], metavar="RUN_DIR", help="keep these runs' metrics.json")
    p.add_argument("--check", action="store_true", help="exit 1 when docs/RESULTS.md is not up to date")
    args = p.parse_args(argv)
    for run_dir in args.add:
        m = json.loads((Path(run_dir) / "metrics.json").read_text())
        if m.get("limit"):
            raise SystemExit(f"{run_dir}: trained on --limit {m['limit']} examples; only full runs go in the table")
        folder = RESULTS_DIR / record_name(m)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(run_dir) / "metrics.json", folder / f"seed-{m['seed']}.json")
    text = RESULTS_MD.read_text()
    new = updated_markdown(text, render(load_runs()))
    if args.check:
        if new != text:
            print(f"{RESULTS_MD} is stale: run python bench/accuracy_table.py", file=sys.stderr)
            return 1
        return 0
    RESULTS_MD.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
