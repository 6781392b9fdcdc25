"""experiments/time_to_target.py: its recipes are valid configs, and a finished run is reported,
never retrained (a benchmark's time is one uninterrupted run)."""
import json

import pytest

import train_phase2
from conftest import make_fashion
from experiments import time_to_target
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
