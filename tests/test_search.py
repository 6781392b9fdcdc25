"""experiments/search.py: equal tuning, on validation only, then the best retrained and tested."""
import json
from pathlib import Path
from types import SimpleNamespace

import optuna

from conftest import sweep_here
from experiments import search
from experiments.common import spaces, studies
from neuroshrink import export


def test_search_tries_as_many_configurations_per_method_on_validation_then_retrains_the_best(tmp_path):
    sweep_here(tmp_path, "--widths", "0.25", "--trials", "2", "--seeds", "1", script="search")
    url = f"sqlite:///{tmp_path / 'results' / 'digits' / 'sweep.db'}"
    for method in search.METHODS:
        trials = studies.finished(studies.open_study(url, f"search-digits-{method}-w0.25"))
        assert len(trials) == 2  # the same number of configurations for every method
        for t in trials:
            record = t.user_attrs["record"]
            run = json.loads((Path(record["run"]) / "results.json").read_text())
            assert t.value == run["final"]["val_acc"]  # the objective is the validation score...
            assert "test_acc" not in record  # ...and the test score is not stored with the search
            assert run["settings"]["seed"] == spaces.SEARCH_SEED
            assert all(run["settings"][key] == record["hp"][key] for key in ("lr", "dropout", "schedule"))
            if method == "dendritic":
                assert run["settings"]["dendrite_activation"] == record["hp"]["dendrite_activation"]
        best = max(trials, key=lambda t: t.value).user_attrs["record"]["hp"]
        retrained = studies.records(studies.open_study(url, f"best-digits-{method}-w0.25"))
        assert [r["seed"] for r in retrained] == [1] and retrained[0]["hp"] == best
    table = (tmp_path / "results" / "digits" / "search.md").read_text()
    assert sum(line.startswith("| 0.25 | ") and " | 2 | " in line for line in table.splitlines()) == 2
    # The width's winner by validation, shipped self-contained
    seeds = {m: studies.records(studies.open_study(url, f"best-digits-{m}-w0.25"))[0] for m in search.METHODS}
    winner = max(seeds.values(), key=lambda r: r["val_acc"])
    meta = export.read_metadata(tmp_path / "results" / "digits" / "deploy" / "search" / "w0.25" / "model.onnx")
    assert (meta["method"], meta["width"], meta["test_acc"]) == (winner["method"], 0.25, winner["onnx"]["test_acc"])
    store = tmp_path / "results" / "digits" / "sweep.db"
    before = store.read_bytes()
    sweep_here(tmp_path, "--report-only", script="search")  # default widths, never searched here
    assert store.read_bytes() == before and (tmp_path / "results" / "digits" / "search.md").read_text() == table


def test_search_of_one_method_leaves_the_others_alone(tmp_path):
    sweep_here(tmp_path, "--widths", "0.25", "--trials", "1", "--seeds", "1", "--methods", "plain", script="search")
    url = f"sqlite:///{tmp_path / 'results' / 'digits' / 'sweep.db'}"
    assert sorted(optuna.get_all_study_names(url)) == ["best-digits-plain-w0.25", "search-digits-plain-w0.25"]
    table = (tmp_path / "results" / "digits" / "search.md").read_text()
    assert [line.split(" | ")[1] for line in table.splitlines() if line.startswith("| 0.25 | ")] == ["plain"]


def test_pareto_front_keeps_only_the_unbeaten():
    points = [(90, 100), (92, 200), (91, 300), (80, 50), (92, 250)]
    trials = [SimpleNamespace(values=v) for v in points]
    assert sorted(t.values for t in search.pareto_front(trials)) == [(80, 50), (90, 100), (92, 200)]
