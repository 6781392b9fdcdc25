"""experiments/families.py: candidates at one budget, trained side by side, reported."""
import contextlib
import io

from conftest import within_budget
from experiments import families


def test_every_candidate_trains_at_the_budget_for_the_same_epochs(tmp_path):
    args = families.get_args_parser().parse_args(["--quick", "--budget", "4000", "--epochs", "2", "--models", "net",
                                                  "slim", "--results", str(tmp_path)])
    with contextlib.redirect_stdout(io.StringIO()):
        rows = families.main(args)
    assert [model for model, _, _ in rows] == ["net", "slim"]
    for _, _, result in rows:
        assert within_budget(result["final"]["params"], 4000) and result["final"]["epochs"] == 2
        assert result["settings"]["min_epochs"] == 2  # exactly the epochs asked: early stopping cannot cut one short
        assert result["restructures"] == [] and result["settings"]["no_dendrites"]
    report = (tmp_path / "digits" / "families-4000.md").read_text()
    assert "| net |" in report and "| slim |" in report and "2 epochs" in report


def test_the_strong_recipe_reaches_every_candidate(tmp_path):
    args = families.get_args_parser().parse_args(["--quick", "--budget", "4000", "--epochs", "2", "--models", "compact",
                                                  "--recipe", "strong", "--results", str(tmp_path)])
    with contextlib.redirect_stdout(io.StringIO()):
        (_, _, result), = families.main(args)
    settings = result["settings"]
    assert (settings["recipe"], settings["schedule_epochs"], result["final"]["epochs"]) == ("strong", 2, 2)
    assert "the strong recipe" in (tmp_path / "digits" / "families-4000-strong.md").read_text()
