"""Moving arrays between devices in tests, real data sets when they can be had, and the tables of
docs/ERRORS.md."""

import os
from pathlib import Path

import numpy as np
import pytest


def to_device(a, device):
    """A float32 copy of a NumPy array on 'cpu' (NumPy) or 'cuda' (CuPy)."""
    a = np.ascontiguousarray(a)
    if device == "cuda":
        import cupy

        return cupy.asarray(a)
    return a.copy()


def to_numpy(a):
    """Any array (NumPy or CuPy, or None) as NumPy."""
    if a is None or isinstance(a, np.ndarray):
        return a
    return a.get()


def real_data(loader, name):
    """``loader()``'s data; where it cannot be had the test skips, except in CI, which must have it."""
    from convkit.datasets import DataUnavailableError

    try:
        return loader()
    except DataUnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{name} must be available in CI: {exc}")
        pytest.skip(f"{name} not available here: {str(exc).splitlines()[0]}")


ERRORS_MD = Path(__file__).resolve().parent.parent / "docs" / "ERRORS.md"


def error_table(cases, run) -> str:
    """(call, exception, pattern) cases as a Markdown table with the message each one raises today."""
    rows = ["| call | exception | message |", "|---|---|---|"]
    for call, exc, _ in cases:
        try:
            run(call)
        except exc as e:
            message = str(e).replace("|", "\\|").replace("\n", " ")
            rows.append(f"| `{call}` | {type(e).__name__} | {message} |")
        else:
            raise AssertionError(f"{call} raised nothing")
    return "\n".join(rows)


def errors_md_with(name: str, table: str) -> str:
    """docs/ERRORS.md with the table between its ``name`` markers replaced."""
    begin, end = f"<!-- {name} table: made by python python_tests/test_{name}_errors.py -->", f"<!-- end of {name} table -->"
    before, rest = ERRORS_MD.read_text().split(begin, 1)
    return f"{before}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}"


def error_table_tests(name, cases, run):
    """The two tests behind a table of docs/ERRORS.md: each case raises as listed, and the table is current."""
    def test_errors_doc_lists_every_case_with_its_message():
        assert ERRORS_MD.read_text() == errors_md_with(name, error_table(cases, run)), \
            f"docs/ERRORS.md is stale: run python python_tests/test_{name}_errors.py"

    @pytest.mark.parametrize("call,exc,pattern", cases, ids=[f"case{i}" for i in range(len(cases))])
    def test_bad_input_is_refused_clearly(call, exc, pattern):
        with pytest.raises(exc, match=pattern):
            run(call)

    return test_errors_doc_lists_every_case_with_its_message, test_bad_input_is_refused_clearly


def write_error_table(name, cases, run):
    ERRORS_MD.write_text(errors_md_with(name, error_table(cases, run)))


def rerun_under_micro_kernel(test_file, kernel, name, selection, cwd):
    """Run ``test_file``'s tests chosen by ``-k selection`` again in a fresh process with
    CONVKIT_CPU_KERNEL=kernel, checking first that the module then reports ``name``. Runs from ``cwd``
    (not the checkout), so that the installed package is the one imported."""
    import subprocess
    import sys

    import convkit

    if kernel == "avx2" and convkit._cpu.micro_kernel() == "generic":
        pytest.skip("this CPU has no AVX2")
    script = (
        "import sys, pytest, convkit._cpu as c\n"
        f"assert c.micro_kernel() == {name!r}, c.micro_kernel()\n"
        "sys.exit(pytest.main(sys.argv[1:]))\n"
    )
    env = dict(os.environ, CONVKIT_CPU_KERNEL=kernel)
    args = [test_file, "-q", "-p", "no:cacheprovider", "-k", selection]
    child = [sys.executable, *(["-S"] if sys.flags.no_site else []), "-c", script]  # as this interpreter runs
    run = subprocess.run([*child, *args], env=env, capture_output=True, text=True, cwd=cwd)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and " failed" not in run.stdout, run.stdout[-3000:]
