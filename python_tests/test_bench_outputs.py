"""Benchmarks never overwrite the record in bench/results/ unless --out names a file there."""

import ast
from pathlib import Path

import result_file

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_default_result_files_are_new_and_outside_the_record():
    a, b = result_file.result_path(None, "kernels-cpu"), None
    a.write_text("{}")
    try:
        b = result_file.result_path(None, "kernels-cpu")
        assert a != b and not b.exists()
        for p in (a, b):
            assert BENCH / "results" not in p.parents and p.parent == result_file.SCRATCH
    finally:
        a.unlink()


def test_out_is_taken_as_given(tmp_path):
    assert result_file.result_path(tmp_path / "x" / "k.json", "kernels-cpu") == tmp_path / "x" / "k.json"
    assert (tmp_path / "x").is_dir()


def test_every_benchmark_with_out_goes_through_result_path():
    """A script that takes --out and writes a result must choose its file with result_path."""
    for script in sorted(BENCH.glob("*.py")):
        text = script.read_text()
        if '"--out"' not in text:
            continue
        calls = {n.func.id for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "result_path" in calls, f"{script.name} takes --out but never calls result_path"
        assert '"results" /' not in text and "'results' /" not in text, f"{script.name} builds a path in bench/results"
