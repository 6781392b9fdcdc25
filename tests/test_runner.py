"""experiments/common/runner.py: one run of a sweep, continued, recorded or replaced; one-line errors."""
import json
import sys

import pytest

import train_phase2
from conftest import stopped_after, sweep_run
from experiments import width_sweep
from experiments.common import runner, studies
from neuroshrink.errors import UsageError


def test_a_sweeps_threads_reach_its_runs(tmp_path):
    """The tests train on one thread (conftest): a sweep's --threads 2 must show in its run."""
    import torch

    args = width_sweep.get_args_parser().parse_args(["--quick", "--threads", "2"])
    try:
        record = sweep_run(args, {"width": 0.0625, "method": "plain", "seed": 1, "min_epochs": 1}, tmp_path / "run")
    finally:
        torch.set_num_threads(1)
    assert record["settings"]["threads"] == 2


def test_a_sweep_with_precision_auto_records_what_each_run_trained_in(tmp_path):
    import torch

    from neuroshrink import precision

    args = width_sweep.get_args_parser().parse_args(["--quick", "--precision", "auto"])
    record = sweep_run(args, {"width": 0.0625, "method": "plain", "seed": 1, "min_epochs": 1}, tmp_path / "run")
    run = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["settings"]["precision"] == "auto" and record["precision"] == run["precision"]["chosen"]
    assert record["precision"] in precision.available(torch.device("cpu"))  # measured, then taken


def test_a_stopped_run_continues_on_the_sweeps_threads(tmp_path, monkeypatch):
    """A worker's first run may be one a stopped worker left: it too trains on --threads, not
    on torch's one thread per core beside the other worker."""
    import torch

    args = width_sweep.get_args_parser().parse_args(["--quick", "--threads", "2", "--epochs", "3"])
    cell = {"width": 0.0625, "method": "plain", "seed": 1, "min_epochs": 3}
    try:
        with stopped_after(monkeypatch, 1):
            sweep_run(args, cell, tmp_path / "run")
        torch.set_num_threads(1)  # as a new worker's process starts: not 2
        assert sweep_run(args, cell, tmp_path / "run")["epochs"] == 3
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_a_run_folder_of_other_settings_is_replaced_and_one_of_the_same_recorded(tmp_path, monkeypatch, capsys):
    """A sweep's run folder may hold a stopped run of other settings: the trial of the same
    name of a study since deleted. It is trained anew, not continued (a stopped run of the
    same settings is continued: test_sweep); a finished run of the same settings is recorded."""
    args = width_sweep.get_args_parser().parse_args(["--quick", "--epochs", "4"])
    cell, folder = {"width": 0.25, "method": "plain", "seed": 1, "min_epochs": 4}, tmp_path / "trial0"
    with stopped_after(monkeypatch, 2):
        sweep_run(args, cell, folder, lr=0.01)
    record = sweep_run(args, cell, folder)
    assert "holds a run of other settings" in capsys.readouterr().out
    run = json.loads((folder / "results.json").read_text())
    assert run["settings"]["lr"] == 1e-3 and [row["epoch"] for row in run["history"]] == [1, 2, 3, 4]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run of the same settings was trained again")
    monkeypatch.setattr(train_phase2, "run", no_training)
    assert sweep_run(args, cell, folder) == json.loads(json.dumps(record))  # as the storage holds it


def test_a_sweep_of_other_settings_is_refused(tmp_path):
    """Every run of a study shares the sweep's settings: the first worker's."""
    study = studies.open_study(f"sqlite:///{tmp_path / 'sweep.db'}", "sweep")
    runner.check_settings(study, width_sweep.get_args_parser().parse_args([]))
    with pytest.raises(UsageError, match="holds runs made with --patience 5, not 3"):
        runner.check_settings(study, width_sweep.get_args_parser().parse_args(["--patience", "3"]))


def test_a_storage_that_cannot_be_opened_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["width_sweep.py", "--storage", "nosuchdb://x", "--results", str(tmp_path)])
    with pytest.raises(SystemExit) as stopped:
        with runner.exit_status():
            width_sweep.main(width_sweep.get_args_parser().parse_args())
    message = str(stopped.value.code)
    assert message.startswith("error: cannot open the storage nosuchdb://x") and "\n" not in message


def test_a_sweep_stored_before_recipes_holds_default_recipe_runs(tmp_path):
    """Studies committed before --recipe was a sweep setting lack the key: their runs were
    trained with the default recipe, and a strong worker must not add to them."""
    study = studies.open_study(f"sqlite:///{tmp_path / 'sweep.db'}", "old")
    args = width_sweep.get_args_parser().parse_args([])
    study.set_user_attr("sweep", {key: getattr(args, key) for key in runner.SHARED if key != "recipe"})
    runner.check_settings(study, args)
    args.recipe = "strong"
    with pytest.raises(UsageError, match="--recipe default, not strong"):
        runner.check_settings(study, args)


@pytest.mark.parametrize("stored, expected", [(None, "auto"), ({"precision": "fp32"}, "fp32"), ({}, "fp32")])
def test_a_sweep_without_precision_keeps_its_own_and_a_new_one_measures(stored, expected):
    """The committed sweeps trained in fp32 (those from before --precision store none): run
    again without --precision they go on in fp32; a new sweep takes auto."""
    import optuna

    args = width_sweep.get_args_parser().parse_args(["--quick"])
    study = optuna.create_study()
    if stored is not None:
        study.set_user_attr("sweep", stored | {key: getattr(args, key) for key in runner.SHARED if key != "precision"})
    runner.check_settings(study, args)
    assert args.precision == expected == study.user_attrs["sweep"].get("precision", "fp32")  # stored by a new one


def test_a_measurement_names_its_revision_changed_only_where_the_code_measured_changed(tmp_path):
    """experiments/common/before_after.py: records, docs and tests edited meanwhile are not the code measured."""
    import subprocess

    from experiments.common.before_after import revision

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for path in ("code.py", "docs/page.md", "tests/test_it.py", "results/record.json"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text("first\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    commit = revision(tmp_path)
    assert commit and "+" not in commit
    for path in ("docs/page.md", "tests/test_it.py", "results/record.json"):
        (tmp_path / path).write_text("edited\n")
    assert revision(tmp_path) == commit
    (tmp_path / "code.py").write_text("edited\n")
    assert revision(tmp_path) == commit + "+changes"
