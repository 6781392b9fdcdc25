"""experiments/strong_recipe.py: today's recipe and the strong one, seed by seed, in
recipe.csv; the time to a validation level; workers that share the runs; the report."""
import contextlib
import io

import pytest

from conftest import within_budget
from experiments import strong_recipe

FLAGS = ["--dataset", "digits", "--quick", "--threads", "1", "--seeds", "1", "--budgets", "4000", "2000",
         "--level", "60"]


def sweep(tmp, *flags):
    args = strong_recipe.get_args_parser().parse_args(
        [*FLAGS, "--results", str(tmp / "results"), "--runs", str(tmp / "runs"), *flags])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rows = strong_recipe.main(args)
    return rows, printed.getvalue()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("strong_recipe")
    first = sweep(tmp, "--worker", "1/2")
    second = sweep(tmp, "--worker", "2/2")
    return {"tmp": tmp, "first": first, "second": second}


def test_two_workers_share_the_runs_and_every_run_is_recorded(swept):
    rows, _ = swept["second"]
    assert [(r["model"], r["recipe"]) for r in rows] == [("net", "default"), ("compact", "strong"), ("compact", "strong")]
    assert within_budget(int(rows[1]["params"]), 4000) and within_budget(int(rows[2]["params"]), 2000)
    first_rows, first_log = swept["first"]
    assert len(first_rows) == 2 and "=== strong-4000-1" not in first_log  # worker 1 of 2: runs 1 and 3


def test_each_row_is_its_run(swept):
    from neuroshrink.run_folder import read_run

    rows, _ = swept["second"]
    runs = swept["tmp"] / "runs" / "digits" / "recipe"
    for row, name in zip(rows, ("today-1", "strong-4000-1", "strong-2000-1")):
        run = read_run(runs / name)
        assert float(row["test_acc"]) == run["final"]["test_acc"] and int(row["epochs"]) == run["final"]["epochs"]
        assert float(row["train_seconds"]) == pytest.approx(sum(h["train_seconds"] for h in run["history"]), abs=0.1)
        assert row["precision"] in ("fp32", "bf16") and row["cpu"] and row["date"]
        reached = [h for h in run["history"] if h["val_acc"] >= 60]
        assert row["level_epoch"] == (str(reached[0]["epoch"]) if reached else "")
        assert row["level_test_acc"] == (str(reached[0]["test_acc"]) if reached else "")  # --test-every-epoch
    assert rows[1]["recipe"] == "strong" and int(rows[1]["epochs"]) == 30  # the fixed budget (--quick's cap)


def test_a_second_start_trains_nothing_and_the_report_regenerates(swept):
    tmp = swept["tmp"]
    report = (tmp / "results" / "digits" / "recipe.md").read_text()
    rows, log = sweep(tmp)
    assert "holds this run, finished" in log and "epoch=" not in log
    sweep(tmp, "--report-only")
    assert (tmp / "results" / "digits" / "recipe.md").read_text() == report
    assert (tmp / "results" / "digits" / "recipe.png").stat().st_size > 0


def test_a_bad_worker_share_is_refused():
    from neuroshrink.errors import UsageError

    with pytest.raises(UsageError, match="--worker 3/2"):
        strong_recipe.worker_share("3/2", [1, 2])
