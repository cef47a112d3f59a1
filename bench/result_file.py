"""Where a benchmark writes its result: the file --out names, else a new one.

bench/results/ is the record, changed only on purpose: a run replaces a committed file only when
--out names it. Without --out a run gets a new file under runs/bench/ (ignored by git), so a smoke
run can never overwrite a recorded result.
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "runs" / "bench"


def result_path(out, stem: str) -> Path:
    """``out`` when given, else a new path runs/bench/<stem>-<date>-<time>[-n].json that no file has yet."""
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    SCRATCH.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = SCRATCH / f"{base}.json", 1
    while path.exists() or path.with_suffix(".txt").exists():
        n += 1
        path = SCRATCH / f"{base}-{n}.json"
    return path


def out_help(stem: str) -> str:
    return (f"JSON path; the table goes beside it as .txt (default: a new file runs/bench/{stem}-<time>.json; "
            f"name bench/results/{stem}.json to replace the record)")
