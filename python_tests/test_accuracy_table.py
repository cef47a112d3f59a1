"""docs/RESULTS.md is derived from the kept run records and must agree with them."""

import accuracy_table


def test_results_md_matches_the_run_records():
    text = accuracy_table.RESULTS_MD.read_text()
    assert text == accuracy_table.updated_markdown(text, accuracy_table.render(accuracy_table.load_runs())), \
        "docs/RESULTS.md is stale: run python bench/accuracy_table.py"


def test_a_run_below_its_target_is_marked():
    run = dict(test_accuracy=0.9890, epochs_run=30, epochs=30, train_seconds=600.0, machine="a CPU", threads=2,
               device="cpu", date="2026-01-01", command="python -m convkit.train lenet5")
    row = next(l for l in accuracy_table.render({"lenet5": run}).splitlines() if l.startswith("| lenet5 |"))
    assert "| 98.90% | **no** | 30/30 | 10.0 min |" in row
    run["test_accuracy"] = 0.9912
    row = next(l for l in accuracy_table.render({"lenet5": run}).splitlines() if l.startswith("| lenet5 |"))
    assert "| 99.12% | yes |" in row
