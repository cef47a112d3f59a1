"""docs/RESULTS.md is derived from the kept run records and must agree with them."""

import accuracy_table


def test_results_md_matches_the_run_records():
    text = accuracy_table.RESULTS_MD.read_text()
    assert text == accuracy_table.updated_markdown(text, accuracy_table.render(accuracy_table.load_runs())), \
        "docs/RESULTS.md is stale: run python bench/accuracy_table.py"


def test_a_run_below_its_target_is_marked():
    run = dict(model="lenet5", lr_schedule="constant", test_accuracy=0.9890, epochs_run=30, epochs=30, train_seconds=600.0, machine="a CPU", threads=2,
               device="cpu", date="2026-01-01", command="python -m convkit.train lenet5")
    row = next(l for l in accuracy_table.render({"lenet5": run}).splitlines() if l.startswith("| lenet5 |"))
    assert "| 98.90% | **no** | 30/30 | 10.0 min |" in row
    run["test_accuracy"] = 0.9912
    row = next(l for l in accuracy_table.render({"lenet5": run}).splitlines() if l.startswith("| lenet5 |"))
    assert "| 99.12% | yes |" in row


def test_a_run_with_another_schedule_gets_its_own_row():
    base = dict(model="lenet5", test_accuracy=0.99, epochs_run=30, epochs=30, train_seconds=60.0, machine="m",
                threads=2, device="cpu", date="d", command="c")
    notes, cosine = {**base, "lr_schedule": "constant"}, {**base, "lr_schedule": "cosine", "test_accuracy": 0.9921}
    assert accuracy_table.record_name(notes) == "lenet5"
    assert accuracy_table.record_name(cosine) == "lenet5+cosine"
    rows = [l for l in accuracy_table.render({"lenet5": notes, "lenet5+cosine": cosine}).splitlines()
            if l.startswith("| lenet5")]
    assert rows[0].startswith("| lenet5 | mnist |") and rows[1].startswith("| lenet5, cosine schedule |")
    assert "99.21% | yes" in rows[1] and "99.00% | **no**" in rows[0]
