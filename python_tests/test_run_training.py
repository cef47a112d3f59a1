"""The PyTorch and Keras twins of bench/run_training.py compute what the convkit models compute."""

import json
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
os.environ.setdefault("KERAS_BACKEND", "torch")  # the benchmark runs Keras on TensorFlow; any backend checks the twin

import run_training  # noqa: E402
import workers  # noqa: E402



@pytest.mark.parametrize("name", list(run_training.MODELS))
def test_torch_twin_matches_convkit_forward(name):
    model = run_training._convkit_model(name)
    x, _ = run_training._data(name, 4, 1)
    net = run_training.torch_twin(model).eval()
    with torch.no_grad():
        theirs = torch.softmax(net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())), 1).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(run_training.MODELS))
def test_keras_twin_matches_convkit_forward(name):
    pytest.importorskip("keras")
    model = run_training._convkit_model(name)
    x, _ = run_training._data(name, 4, 1)
    twin = run_training.keras_twin(run_training.layer_specs(model), x.shape[1:], 1e-3)
    assert twin.count_params() == model.count_params()
    np.testing.assert_allclose(twin.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)


def test_one_run_times_every_configuration_in_interleaved_windows_under_one_allocator(tmp_path):
    pytest.importorskip("keras")
    out = tmp_path / "training.json"
    run_training.main(["--models", "lenet5", "--min-window", "0.01", "--rounds", "2", "--threads", "1",
                       "--peers", "torch-nchw", "torch-channels_last", "keras", "--out", str(out)])
    got = json.loads(out.read_text())
    (row,) = got["rows"]
    assert set(row["configs"]) == {"convkit", "torch-nchw", "torch-channels_last", "keras"}
    for config, res in row["configs"].items():
        assert res["allocator"] == workers.allocator_env("glibc-kept"), config  # what each process was given
        assert len(res["train_windows"]) == len(res["infer_windows"]) == 2 and res["peak_rss_mib"] > 0
        assert res["warmup_losses"][-1] < res["warmup_losses"][0]
    assert row["configs"]["torch-channels_last"]["layout"] == "channels_last"
    best = row["best"]["torch"]["train"]
    assert best == max(["torch-nchw", "torch-channels_last"], key=lambda c: row["configs"][c]["train_img_s"])
    assert row["ratios"]["torch"]["train"] == pytest.approx(
        row["configs"]["convkit"]["train_img_s"] / row["configs"][best]["train_img_s"])
    assert "keras" in row["best"] and out.with_suffix(".txt").read_text().count("lenet5") == 2


def test_a_twin_that_is_not_convkits_model_is_not_timed(tmp_path):
    pytest.importorskip("keras")
    spec = tmp_path / "twin.npz"
    run_training.write_keras_spec("lenet5", 32, spec)
    with np.load(spec) as f:
        arrays = dict(f)
    arrays["w0_0"] = arrays["w0_0"] * 1.01
    np.savez(spec, **arrays)
    cmd = [sys.executable, run_training.__file__, "--worker", "keras", "--spec", str(spec), "--min-window", "0.01"]
    with pytest.raises(RuntimeError, match="Keras twin disagrees"):
        workers.Worker("keras lenet5", cmd, {"KERAS_BACKEND": os.environ["KERAS_BACKEND"]})


def test_allocator_settings():
    assert workers.allocator_env("default") == {}
    with pytest.raises(ValueError, match="allocator must be one of"):
        workers.allocator_env("mimalloc")
    import ctypes.util

    if ctypes.util.find_library("tcmalloc") is None:
        with pytest.raises(SystemExit, match="tcmalloc not found"):
            workers.allocator_env("tcmalloc")
    else:
        assert "tcmalloc" in workers.allocator_env("tcmalloc")["LD_PRELOAD"]


def test_two_versions_are_timed_in_alternating_windows(tmp_path):
    import compare_versions

    out = tmp_path / "versions.json"
    compare_versions.main([sys.executable, sys.executable, "--models", "lenet5", "--min-window", "0.01",
                           "--rounds", "2", "--threads", "1", "--out", str(out)])
    got = json.loads(out.read_text())
    assert got["info"]["versions"]["before"] == got["info"]["versions"]["after"]
    (row,) = got["rows"]
    for side in ("before", "after"):
        assert len(row[side]["train_windows"]) == 2 and row[side]["allocator"] == workers.allocator_env("glibc-kept")
    assert row["train_ratio"] == pytest.approx(compare_versions.paired_ratio(row["before"]["train_windows"],
                                                                            row["after"]["train_windows"]))
    with pytest.raises(SystemExit, match="cannot import convkit"):
        compare_versions.version_of(str(tmp_path / "no-python"))


def test_version_ratio_pairs_the_windows_of_each_round():
    import compare_versions

    # The machine slows down by half between rounds; within each round 'after' is 10% faster.
    assert compare_versions.paired_ratio([100, 50, 60], [110, 55, 66]) == pytest.approx(1.1)


def test_results_named_txt_keep_their_json_beside_the_table(tmp_path):
    run_training.write_results(tmp_path / "run.txt", {"device": "cpu"}, [{"model": "lenet5"}], ["a table"])
    assert json.loads((tmp_path / "run.json").read_text())["rows"] == [{"model": "lenet5"}]
    assert (tmp_path / "run.txt").read_text() == "a table\n"
