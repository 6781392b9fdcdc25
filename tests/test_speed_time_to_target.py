"""experiments/speed/time_to_target.py (python -m experiments.speed --time-to-target): its recipes
are valid configs, a finished run is recorded, never retrained (a benchmark's time is one
uninterrupted run), and --quick runs every part and writes the report its records give."""
import contextlib
import io
import json

import pytest

import train_phase2
from conftest import make_fashion
from experiments import speed
from experiments.speed import time_to_target
from neuroshrink import build
from neuroshrink.config import RunConfig


@pytest.mark.parametrize("name", list(time_to_target.RECIPES))
def test_every_recipe_is_a_plain_strong_run_of_the_compact_cnn(name):
    config = RunConfig(**time_to_target.BASE | time_to_target.RECIPES[name], dataset="fashion-mnist").resolved()
    assert config.no_dendrites and config.recipe == "strong" and config.model == "compact"
    assert config.schedule_epochs == config.epochs == config.min_epochs  # one schedule over the whole budget
    assert config.params < 100_000


def test_a_finished_run_is_found_again_and_a_stopped_one_trained_from_its_start(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    make_fashion(tmp_path / "data", gz=True)
    recipe = time_to_target.BASE | time_to_target.RECIPES["fast"] | dict(params=5_000, precision="fp32", epochs=2,
                                                                           compile=False)  # compiling: tens of seconds
    config = RunConfig(**recipe, dataset="fashion-mnist", data_dir=str(tmp_path / "data"), quick=True).resolved()
    folder = tmp_path / "fast-seed1"
    record = time_to_target.trained(config, folder)
    splits = build.splits_of(config)
    assert 0 <= time_to_target.without_tta(folder, splits) <= 100  # the same model, images alone

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run of the same settings was trained again")
    with monkeypatch.context() as patch:
        patch.setattr(train_phase2, "run", no_training)
        found = time_to_target.trained(config, folder)
    assert found["history"] == record["history"] and found["final"]["test_acc"] == record["final"]["test_acc"]

    record["status"] = "running"  # as a killed benchmark leaves it
    (folder / "results.json").write_text(json.dumps(record))
    (folder / "left by the killed run").touch()
    again = time_to_target.trained(config, folder)
    assert again["status"] == "complete" and not (folder / "left by the killed run").exists()  # a fresh folder


def test_the_benchmark_runs_quick_and_its_report_is_what_its_records_give(tmp_path, monkeypatch):
    """--quick: the step table (eager) and every recipe (uncompiled) on a few images; then
    --report-only writes the same report from the records alone."""
    (tmp_path / "data").mkdir()
    make_fashion(tmp_path / "data", gz=True)
    monkeypatch.setattr(time_to_target, "BASE", time_to_target.BASE | dict(params=5_000, data_dir=str(tmp_path / "data")))
    monkeypatch.setattr(time_to_target, "RECIPES", {name: changes | dict(epochs=2)  # a check, not a measurement
                                                    for name, changes in time_to_target.RECIPES.items()})
    flags = ["--time-to-target", "--quick", "--seeds", "1", "--results", str(tmp_path / "results"),
             "--runs", str(tmp_path / "runs")]
    with contextlib.redirect_stdout(io.StringIO()):
        record = speed.main(speed.get_args_parser().parse_args(flags))
    report = tmp_path / "results" / "fashion-mnist-time-to-target.md"
    written = report.read_text()
    assert [r["recipe"] for r in record["runs"]] == list(time_to_target.RECIPES)
    assert all(not json.loads((tmp_path / "runs" / "fashion-mnist" / "time-to-target" / f"{r['recipe']}-seed1" /
                               "results.json").read_text())["settings"]["compile"] for r in record["runs"])
    assert {c["compiled"] for c in record["step"]["cases"]} == {False}
    assert "| fast | precision auto, compile False, epochs 2, tta True |" in written
    report.unlink()
    with contextlib.redirect_stdout(io.StringIO()):
        speed.main(speed.get_args_parser().parse_args([*flags, "--report-only"]))
    assert report.read_text() == written
