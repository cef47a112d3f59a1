#!/usr/bin/env python3
"""bench/gpu_session.sh rehearsed on a machine without a GPU, in a stand-in for the GPU machine, then
a check of what it left in $OUT.

The stand-in: no network (pip's index and every HTTP proxy are an address that refuses
connections); a venv with only the packages of the GPU machine's image (bench/gpu_image_packages.txt):
this Python's packages, every other one hidden so that importing it fails as it would there;
nvidia-smi and compute-sanitizer stand-ins (the latter runs the program it is given, without a tool);
an empty $OUT. The benchmarks run on the CPU, and the CUDA steps fail or skip as they must without a
GPU, but every step runs the command it runs there.

    bash bench/gpu_session.sh --rehearse           # the whole run: builds convkit, about 7 minutes
    bash bench/gpu_session.sh --rehearse --quick   # a quarter of each budget, small workloads, 60 s
                                                   # in all, reusing the installed convkit

The check: every step started or was skipped with its reason, each started step ended within its
budget and left its log in $OUT or in the archive there, a step that succeeded left its result file,
and $OUT holds at most 8 files in at most 2 folders, named as the GPU machine returns them.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import site
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPT = BENCH / "gpu_session.sh"
ARCHIVE = "gpu-session.tar.gz"
MAX_FILES = 8
RESULTS = {"kernels": "kernels-{device}.json", "training": "training-{device}.json"}
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused

NVIDIA_SMI = """#!/bin/sh
# nvidia-smi stand-in for a rehearsal: the GPU machine's card, as it describes it.
case "$*" in
  *--query-gpu*) echo "name, driver_version, memory.total [MiB], clocks.max.sm [MHz], clocks.sm [MHz]"
                 echo "NVIDIA H200 (stand-in), 580.159.04, 143771 MiB, 1980 MHz, 345 MHz" ;;
  *) echo "nvidia-smi stand-in: no GPU on this machine" ;;
esac
"""

COMPUTE_SANITIZER = """#!/bin/sh
# compute-sanitizer stand-in for a rehearsal: runs the program it is given, without a tool.
tool=memcheck
while [ $# -gt 0 ]; do
  case $1 in
    --tool) tool=$2; shift 2 ;;
    --error-exitcode|--print-limit|--launch-timeout) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
echo "========= compute-sanitizer stand-in: $tool not run, the program runs alone"
"$@"
"""

SITE_HOOK = '''"""A stand-in for the GPU machine's Python: the packages of {host}, less those its image lacks
(found by no import, as where they are not installed)."""
import os
import re
import site
import sys
from importlib import machinery

HIDDEN = frozenset({hidden!r})
HIDDEN_DISTRIBUTIONS = frozenset({hidden_distributions!r})
FOLDERS = [os.path.abspath(f) for f in {folders!r}]
LOADERS = [(machinery.ExtensionFileLoader, machinery.EXTENSION_SUFFIXES),
           (machinery.SourceFileLoader, machinery.SOURCE_SUFFIXES),
           (machinery.SourcelessFileLoader, machinery.BYTECODE_SUFFIXES)]


class ImageFinder(machinery.FileFinder):
    def find_spec(self, fullname, target=None):
        return None if fullname in HIDDEN else super().find_spec(fullname, target)


class ImagePathFinder(machinery.PathFinder):
    @staticmethod
    def find_distributions(*args, **kwargs):  # importlib.metadata sees no hidden package either
        return (d for d in machinery.PathFinder.find_distributions(*args, **kwargs)
                if re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower() not in HIDDEN_DISTRIBUTIONS)


def image_folder(path):
    if os.path.abspath(path) not in FOLDERS:
        raise ImportError(path)
    return ImageFinder(path, *LOADERS)


sys.meta_path[:] = [ImagePathFinder if f is machinery.PathFinder else f for f in sys.meta_path]
sys.path_hooks.insert(0, image_folder)
sys.path_importer_cache.clear()
for folder in FOLDERS:
    {add}(folder)
'''


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def hidden() -> tuple:
    """The distributions of this Python that the GPU machine's image does not have, and their
    top-level modules."""
    lines = (BENCH / "gpu_image_packages.txt").read_text().splitlines()
    image = {_norm(line) for line in lines if line.strip() and not line.startswith("#")} | {"convkit"}
    dists = sorted({_norm(d.metadata["Name"] or "") for d in md.distributions()} - image - {""})
    modules = sorted(module for module, names in md.packages_distributions().items()
                     if not any(_norm(n) in image for n in names) and not module.startswith("_editable"))
    return dists, modules


def machine(root: Path, quick: bool) -> dict:
    """Builds the stand-in under ``root`` (bin/, venv/, out/, tmp/, build/) and returns its environment."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "out").mkdir(exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    for name, text in (("nvidia-smi", NVIDIA_SMI), ("compute-sanitizer", COMPUTE_SANITIZER)):
        (root / "bin" / name).write_text(text)
        (root / "bin" / name).chmod(0o755)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    folders = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    # A quick rehearsal reuses the convkit installed here (an editable install needs its .pth files
    # read); the whole one installs its own, which no other may shadow.
    dists, modules = hidden()
    hook = SITE_HOOK.format(host=sys.executable, hidden=modules, hidden_distributions=dists, folders=folders,
                            add="site.addsitedir" if quick else "sys.path.append")
    Path(purelib, "_gpu_image.py").write_text(hook)
    Path(purelib, "_gpu_image.pth").write_text("import _gpu_image\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
           and k not in ("CI", "OUT", "CONVKIT_REHEARSAL")}
    env.update(PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHON=str(python), OUT=str(root / "out"),
               TMPDIR=str(root / "tmp"),
               BUILD_DIR=str(root / "build"), CONVKIT_REHEARSAL="quick" if quick else "full",
               PIP_INDEX_URL=f"{UNREACHABLE}/simple", PIP_RETRIES="0", PIP_TIMEOUT="2", PIP_CONFIG_FILE=os.devnull,
               http_proxy=UNREACHABLE, https_proxy=UNREACHABLE, HTTP_PROXY=UNREACHABLE, HTTPS_PROXY=UNREACHABLE,
               ALL_PROXY=UNREACHABLE)
    return env


# --------------------------------------------------------------------------------------- check

HEADER = re.compile(r"budget (\d+) s \| device (\S+) \| .* steps: (.*)$")
EVENT = re.compile(r"^\[\s*(\d+) s\] (\S+) (start|done|FAILED|timeout|skipped)\b:? ?(.*)$")
START = re.compile(r"budget (\d+) s, log (\S+)")
END = re.compile(r"rc=(\d+) in (\d+) s of (\d+)")
FINISH = re.compile(r"^\[\s*\d+ s\] # end: .* after (\d+) s of (\d+)")


def read_progress(out: Path) -> dict:
    """progress.log as {'budget', 'device', 'steps', 'order' (events in turn), 'end' (seconds or None),
    'events': {step: {'start': (at, budget, log), 'end': (kind, rc, took, budget), 'skipped': why}}}."""
    lines = (out / "progress.log").read_text().splitlines()
    head = HEADER.search(lines[0])
    got = dict(budget=int(head[1]), device=head[2], steps=head[3].split(), events={}, order=[], end=None)
    for line in lines[1:]:
        if m := FINISH.match(line):
            got["end"] = int(m[1])
        if not (m := EVENT.match(line)):
            continue
        at, step, kind, rest = int(m[1]), m[2], m[3], m[4]
        ev = got["events"].setdefault(step, {})
        got["order"].append((step, kind))
        if kind == "start":
            s = START.search(rest)
            ev["start"] = (at, int(s[1]), s[2])
        elif kind == "skipped":
            ev["skipped"] = rest
        else:
            e = END.search(rest)
            ev["end"] = (kind, int(e[1]), int(e[2]), int(e[3]))
    return got


def returned_files(out: Path) -> list:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def archived(out: Path) -> set:
    if not (out / ARCHIVE).exists():
        return set()
    with tarfile.open(out / ARCHIVE) as tar:
        return {os.path.normpath(name) for name in tar.getnames()}


def check(out: Path, finished: bool = True) -> list:
    """What is wrong with what a run left in ``out``; ``finished=False`` for a run killed mid-way,
    whose last steps may not have ended (nor, the one that ended last, been packed yet)."""
    problems = []
    files = returned_files(out)
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files in $OUT, more than {MAX_FILES}: {files}")
    problems += [f"{f}: more than 2 folders down or a name the GPU machine does not return" for f in files
                 if f.count("/") > 2 or not re.fullmatch(r"[A-Za-z0-9._/-]+", f)]
    if "progress.log" not in files:
        return problems + ["no progress.log"]
    run, packed = read_progress(out), archived(out)
    order = run["order"]
    for step in run["steps"]:
        ev = run["events"].get(step, {})
        if "skipped" in ev:
            if "start" in ev:
                problems.append(f"{step}: both started and skipped")
            continue
        if "start" not in ev:
            if finished:
                problems.append(f"{step}: neither started nor skipped")
            continue
        _, budget, log = ev["start"]
        if "end" not in ev:
            if finished:
                problems.append(f"{step}: started and never ended")
            continue
        kind, rc, took, _ = ev["end"]
        if took > budget:
            problems.append(f"{step}: took {took} s of a {budget} s budget")
        last = order.index((step, kind)) == len(order) - 1  # the archive is re-packed after each step
        if log not in files and log not in packed and (finished or not last):
            problems.append(f"{step}: its log {log} is neither in $OUT nor in {ARCHIVE}")
        result = RESULTS.get(step, "").format(device=run["device"])
        if rc == 0 and result and result not in files:
            problems.append(f"{step}: succeeded without leaving {result} in $OUT")
    if finished and run["end"] is None:
        problems.append("progress.log has no end line")
    elif finished and run["end"] > run["budget"]:
        problems.append(f"the run took {run['end']} s of a {run['budget']} s budget")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a quarter of each budget, small workloads, 60 s in all")
    p.add_argument("--dir", type=Path, help="where to build the stand-in (default: a new temporary folder)")
    args = p.parse_args(argv)
    root = (args.dir or Path(tempfile.mkdtemp(prefix="convkit-rehearsal-"))).resolve()
    env = machine(root, args.quick)
    print(f"rehearsal in {root}: $OUT is {root / 'out'}", flush=True)
    subprocess.run(["bash", str(SCRIPT)], env=env, cwd=BENCH.parent)
    problems = check(root / "out")
    files = returned_files(root / "out")
    print(f"\n$OUT: {len(files)} files: {', '.join(files)}")
    print("\n".join(["rehearsal FAILED:", *problems]) if problems else "rehearsal passed: every step started or "
          "said why not, stayed in its budget and left its files in $OUT")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
