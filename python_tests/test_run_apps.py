"""bench/run_apps.py end to end on a small case: every peer checked against convkit, then timed and recorded."""

import json
import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # as the benchmark runs it
pytest.importorskip("torch")
pytest.importorskip("keras")

import run_apps  # noqa: E402


def test_a_small_run_writes_rates_for_every_framework(tmp_path):
    out = tmp_path / "apps.json"
    assert run_apps.main(["--models", "EfficientNetB0", "--size", "32", "--batches", "1", "--threads", "1",
                          "--min-reps", "1", "--min-time", "0", "--allocator", "default", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert set(row["img_s"]) == {"convkit", "torch_nchw", "torch_channels_last", "torch_nchw+folded",
                                 "torch_channels_last+folded", "keras"}
    assert all(v > 0 for v in row["img_s"].values()) and max(row["max_abs_diff"].values()) <= run_apps.TOLERANCE
    assert data["info"]["threads"] == 1 and "torch backend" in data["info"]["keras"]
    assert data["info"]["allocator"]["name"] == "default"
    assert "EfficientNetB0" in out.with_suffix(".txt").read_text()
