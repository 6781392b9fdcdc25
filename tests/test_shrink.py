"""The ways of shrinking a CNN that shrink.py compares, each trained for real on tiny data:
a plain CNN at a parameter budget, a pruned wide CNN, the library's recipes with their
restart control, the matched control, and the sweep that pairs them."""
import argparse
import copy
import json

import optuna
import pytest
import torch

import dendrites
import pruning
import run_folder
import search
import shrink
import sweep
import train_phase2
from conftest import built_once, run, stopped_then_resumed, sweep_here
from model import MODELS, Net, count_parameters, width_for_params

DIGITS = dict(in_channels=1, image_size=8, num_classes=10)
RECIPE_METHODS = ("dendritic-mnist", "plain-mnist", "restarts-mnist")


def within_budget(params, budget):
    return abs(params - budget) <= 0.1 * budget


@pytest.mark.parametrize("name, budget", [("net", 300), ("net", 3658), ("net", 50000), ("rescnn", 300),
                                          ("rescnn", 5000)])
def test_params_gives_the_width_of_the_budget(name, budget):
    width = width_for_params(MODELS[name], budget, **DIGITS)
    assert within_budget(count_parameters(MODELS[name](width=width, **DIGITS)), budget)


@pytest.mark.parametrize("fixture, model", [("quick_run", Net), ("rescnn_run", MODELS["rescnn"])])
def test_one_dendrite_set_count_is_the_librarys(fixture, model, request):
    """shrink.py sizes a dendritic model by its count with one set, before training it."""
    result = request.getfixturevalue(fixture)["result"]
    added = next(r for r in result["restructures"] if r["kind"] == "dendrites added")
    assert added["dendrite_sets"] == 1
    assert added["params_after"] == dendrites.count_with_one_set(model(width=0.125, **DIGITS))


@pytest.mark.parametrize("budget", [300, 5000])
def test_pruning_reaches_the_budget_and_keeps_the_classes(budget):
    torch.manual_seed(0)
    model = Net(width=1.0, **DIGITS)
    pruned = pruning.prune_to(model, budget, torch.zeros(2, 1, 8, 8))
    assert within_budget(count_parameters(pruned), budget)
    assert pruning.classifier(pruned).out_features == 10
    assert pruned(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """A finished plain --quick run at width 0.5 (13,706 parameters): what gets pruned."""
    return run(tmp_path_factory.mktemp("wide"), "--quick", "--no-dendrites", "--width", "0.5", out="wide")[0]


def test_a_pruned_run_starts_from_the_trained_model_and_exports_its_accuracy(wide_run, tmp_path):
    source = wide_run["settings"]["out"]
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--prune-from", source, "--params", "1000")
    assert result["status"] == "complete" and within_budget(result["final"]["params"], 1000)
    # Pruned, not rebuilt: before its first fine-tuning epoch it already classifies far above chance.
    model = train_phase2.pruned_model(train_phase2.parse_args(
        ["--quick", "--no-dendrites", "--prune-from", source, "--params", "1000"]), train_phase2.load_splits(
        "digits", None, True))
    splits = train_phase2.load_splits("digits", None, True)
    assert train_phase2.evaluate(model, *splits.val) > 30
    evaluated = train_phase2.main(train_phase2.parse_args(["--evaluate", "--out", str(tmp_path / "PAI")]))
    assert evaluated["test_acc"] == result["final"]["test_acc"]
    inference = result["final"]["inference_ms"]
    assert set(inference) == {"1", "256"} and 0 < inference["1"] < inference["256"]


def test_prune_from_refuses_a_dendritic_run(quick_run, tmp_path):
    with pytest.raises(run_folder.UsageError, match="not a finished plain run"):
        run(tmp_path, "--quick", "--no-dendrites", "--prune-from", str(quick_run["out"]), "--params", "300")


def test_a_schedule_is_stepped_every_epoch_and_restarted_by_the_control(tmp_path):
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--optimizer", "adadelta", "--lr", "1",
                    "--schedule", "step", "--min-epochs", "8", "--restart-at", "3", "5")
    lrs = [r["lr"] for r in result["history"]]
    assert lrs[:8] == pytest.approx([1, 0.7, 0.49, 1, 0.7, 1, 0.7, 0.49])  # StepLR(1, 0.7), rebuilt after 3 and 5
    assert [r["epoch"] for r in result["restructures"]] == [3, 5]


def test_the_control_trains_each_epoch_at_the_traced_learning_rate(tmp_path):
    trace = [1, 1, 0.7, 0.5, 1, 0.7]
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--optimizer", "adadelta", "--lr", "1",
                    "--schedule", "step", "--min-epochs", "8", "--restart-at", "4", "--lr-trace", *map(str, trace))
    lrs = [r["lr"] for r in result["history"]]
    assert lrs[:8] == pytest.approx(trace + [0.49, 0.343])  # then the schedule goes on from the last


# ---------------------------------------------------------------- the sweep

@pytest.fixture(scope="session")
def recipe_sweep(tmp_path_factory):
    """shrink.py on the library's MNIST recipe: the dendritic run and its plain baseline with 3
    search trials each, then the restart control (which takes the baseline's choice), seed 1."""
    tmp = built_once(tmp_path_factory, "recipe_sweep", lambda folder: sweep_here(
        folder, "--budgets", "1000", "--trials", "3", "--methods", *RECIPE_METHODS, script="shrink"))
    output = (tmp / "output.txt").read_text()
    url = f"sqlite:///{tmp / 'results' / 'digits' / 'sweep.db'}"

    def records(method, stage="seeds"):
        stage = {"search": "distinct", "seeds": "distinct-seeds"}[stage]  # a recipe's space is a finite set
        return sweep.records(sweep.open_study(url, f"shrink-digits-net-b1000-{method}-{stage}"))
    return {"tmp": tmp, "output": output, "records": records}


def history(record):
    return json.loads((run_folder.Path(record["run"]) / "results.json").read_text())


def test_the_restart_control_restarts_at_its_dendritic_runs_epochs(recipe_sweep):
    dendritic, = recipe_sweep["records"]("dendritic-mnist")
    control, = recipe_sweep["records"]("restarts-mnist")
    assert dendritic["restarts"], "the dendritic run never restructured: nothing to control for"
    control_run = history(control)
    assert [r["epoch"] for r in control_run["restructures"]] == dendritic["restarts"]
    assert control_run["settings"]["restart_at"] == dendritic["restarts"]
    assert control["min_epochs"] == dendritic["epochs"] <= control["epochs"]
    # Every epoch the dendritic run trained, the control trained at its learning rate.
    lrs = [r["lr"] for r in control_run["history"]]
    assert lrs[:len(dendritic["lrs"])] == dendritic["lrs"] and 1.0 in dendritic["lrs"][1:]


def test_the_matched_control_trains_as_its_dendritic_run_without_dendrites(tmp_path_factory):
    """This project's recipe: matched takes the dendritic search's configuration, not one of
    its own, so that its seeds differ from the dendritic run's in the dendrites alone."""
    tmp = built_once(tmp_path_factory, "matched_sweep", lambda folder: sweep_here(
        folder, "--budgets", "1000", "--trials", "1", "--methods", "dendritic", "matched", script="shrink"))
    url = f"sqlite:///{tmp / 'results' / 'digits' / 'sweep.db'}"
    dendritic, matched = (sweep.records(sweep.open_study(url, f"shrink-digits-net-b1000-{m}-seeds"))[0]
                          for m in ("dendritic", "matched"))
    assert tuple(search.suggest_dendrites(optuna.create_study().ask())) == search.DENDRITE_SETTINGS
    assert matched["hp"] == {k: v for k, v in dendritic["hp"].items() if k not in search.DENDRITE_SETTINGS}
    assert dendritic["restarts"], "the dendritic run never restructured: nothing to control for"
    settings, control_run = history(dendritic)["settings"], history(matched)
    for key in ("lr", "dropout", "schedule", "seed"):
        assert control_run["settings"][key] == settings[key]
    assert control_run["settings"]["no_dendrites"] and within_budget(matched["params"], 1000)
    assert control_run["settings"]["restart_at"] == dendritic["restarts"]
    assert matched["min_epochs"] == dendritic["epochs"] <= matched["epochs"]
    assert [r["lr"] for r in control_run["history"]][:len(dendritic["lrs"])] == dendritic["lrs"]


def test_every_method_has_the_budget_and_the_recipe(recipe_sweep):
    for method in ("dendritic-mnist", "plain-mnist", "restarts-mnist"):
        record, = recipe_sweep["records"](method)
        settings = history(record)["settings"]
        assert (settings["optimizer"], settings["lr"], settings["schedule"]) == ("adadelta", 1.0, "step")
        if record["dendrite_sets"] or method != "dendritic-mnist":  # a dendritic run that kept no set has half
            assert within_budget(record["params"], 1000)
    plain, = recipe_sweep["records"]("plain-mnist")
    control, = recipe_sweep["records"]("restarts-mnist")
    assert plain["hp"] == control["hp"]  # the control takes its baseline's configuration
    evaluated = train_phase2.main(train_phase2.parse_args(["--evaluate", "--out", control["run"]]))
    assert evaluated["test_acc"] == control["test_acc"]  # its exported model reproduces it


def test_search_trials_are_equal_in_number_and_never_see_test(recipe_sweep):
    for method in ("dendritic-mnist", "plain-mnist"):
        trials = recipe_sweep["records"](method, "search")
        assert len(trials) == 3 and all("test_acc" not in r for r in trials)
    # The baseline tunes dropout alone: each value once, where random draws would repeat some.
    assert sorted(r["hp"]["dropout"] for r in recipe_sweep["records"]("plain-mnist", "search")) == [0.1, 0.3, 0.5]
    report = (recipe_sweep["tmp"] / "results" / "digits" / "shrink-net.md").read_text()
    assert all(f"| 1,000 | {m} |" in report for m in ("dendritic-mnist", "plain-mnist", "restarts-mnist"))


def test_a_finite_search_space_is_drawn_without_repeats():
    with_dropout, without = argparse.Namespace(model_has_dropout=True), argparse.Namespace(model_has_dropout=False)
    assert shrink.without_repeats(with_dropout, shrink.BY_NAME["plain-mnist"]) == 3
    assert shrink.without_repeats(with_dropout, shrink.BY_NAME["restarts-api"]) == 3  # its plain recipe's
    assert shrink.without_repeats(with_dropout, shrink.BY_NAME["dendritic-mnist"]) == 3 * 2 * 2 * 3
    assert shrink.without_repeats(without, shrink.BY_NAME["dendritic-api"]) == 2 * 2 * 3
    assert shrink.without_repeats(with_dropout, shrink.BY_NAME["plain"]) is None  # a learning rate, continuous
    assert shrink.without_repeats(without, shrink.BY_NAME["plain-mnist"]) is None  # nothing to tune: one trial


def test_a_search_whose_trials_all_scored_the_same_is_reported_undecided(tmp_path):
    """Every model of a search trained dead (10 % on 10 classes): max() keeps the first drawn,
    and the report says that the search chose nothing."""
    def search_study(name, values):
        study = sweep.open_study(f"sqlite:///{tmp_path / 'sweep.db'}", name)
        study.set_user_attr("trials", len(values))
        for i, value in enumerate(values):
            sweep.add_record(study, {"trial": i}, {"hp": {"dropout": 0.1 * (i + 1)}}, value)
        return study
    assert shrink.chosen(search_study("dead", [10.0, 10.0, 10.0])) == ({"dropout": 0.1}, 10.0)
    assert shrink.chosen(search_study("alive", [10.0, 85.0, 10.0])) == ({"dropout": 0.2}, None)
    assert shrink.chosen(search_study("one trial", [10.0])) == ({"dropout": 0.1}, None)  # nothing to choose from
    assert "search undecided: every trial 10.00 % on validation" in shrink.undecided_note(10.0)
    assert shrink.undecided_note(None) == ""


def test_a_method_without_the_runs_it_pairs_with_is_refused():
    with pytest.raises(run_folder.UsageError, match="restarts-api needs dendritic-api and plain-api as well"):
        shrink.check_methods(["restarts-api"])
    with pytest.raises(run_folder.UsageError, match="matched needs dendritic as well"):
        shrink.check_methods(["matched"])
    shrink.check_methods([m.name for m in shrink.METHODS])  # every method: nothing missing


def test_a_budget_a_method_cannot_meet_is_refused_before_training(tmp_path):
    with pytest.raises(run_folder.UsageError, match="--budgets 300: dendritic cannot have 300 parameters with rescnn"):
        sweep_here(tmp_path, "--model", "rescnn", "--budgets", "300", script="shrink")
    assert not (tmp_path / "runs").exists()


def test_report_only_reproduces_the_report(recipe_sweep):
    path = recipe_sweep["tmp"] / "results" / "digits" / "shrink-net.md"
    before = path.read_text()
    output = sweep_here(recipe_sweep["tmp"], "--report-only", "--budgets", "1000", "--trials", "3", "--methods",
                        *RECIPE_METHODS, script="shrink")
    assert "=== " not in output  # nothing trained
    assert path.read_text() == before


# ---------------------------------------------------------------- resume with a schedule

@pytest.mark.parametrize("flags, stop", [
    # The library's reload also forgets its learning-rate search's state: a dendritic run
    # stopped the epoch before the tracker ends it would run on past that end.
    (["--schedule", "plateau"], -1),
    # A plain run's schedule is part of its checkpoint: cosine would start over.
    (["--no-dendrites", "--schedule", "cosine", "--epochs", "12", "--min-epochs", "12"], 4)])
def test_a_scheduled_run_stopped_then_resumed_gives_the_same_result(tmp_path, monkeypatch, flags, stop):
    flags = ["--quick", *flags]
    whole, _ = run(tmp_path, *flags, out="whole")
    last = stop if stop > 0 else whole["final"]["epochs"] + stop
    resumed = stopped_then_resumed(tmp_path, monkeypatch, last, *flags)
    assert [(r["epoch"], r["lr"], r["val_acc"]) for r in resumed["history"]] == [
        (r["epoch"], r["lr"], r["val_acc"]) for r in whole["history"]]
    assert resumed["final"]["test_acc"] == whole["final"]["test_acc"]


def test_a_run_resumed_in_the_librarys_learning_rate_search_continues_that_search(tmp_path, monkeypatch):
    """With a schedule, after adding dendrites the tracker searches how many of the schedule's
    steps to skip, epoch by epoch. Its reload forgets where that search was; the resumed
    tracker must hold exactly the state the stopped one had, not only give the same history."""
    flags = ["--quick", *shrink.MNIST_RECIPE]
    whole, _ = run(tmp_path, *flags, out="whole")
    # The search reloads the model as it goes (those epochs a resume replays); stop after its last reload.
    stop = max(r["epoch"] for r in whole["restructures"] if r["kind"] == "reloaded") + 1

    def tracker_state():
        return {key: copy.deepcopy(value) for key, value in dendrites.GPA.pai_tracker.member_vars.items()
                if isinstance(value, (bool, int, float, str, list, type(None)))}
    states = {}
    save_epoch, resume = run_folder.RunFolder.save_epoch, dendrites.Tracker.resume

    def save_and_note(self, row, *args):
        save_epoch(self, row, *args)
        if row["epoch"] == stop:
            states["stopped"] = tracker_state()

    def resume_and_note(self, *args):
        model = resume(self, *args)
        states["resumed"] = tracker_state()
        return model
    monkeypatch.setattr(run_folder.RunFolder, "save_epoch", save_and_note)
    monkeypatch.setattr(dendrites.Tracker, "resume", resume_and_note)
    resumed = stopped_then_resumed(tmp_path, monkeypatch, stop, *flags)
    assert states["stopped"]["current_step_count"] > 0  # mid-search: there is a state to lose
    # Every value the stopped tracker held (its optimizer and scheduler objects are rebuilt, not compared)
    assert {key: states["resumed"].get(key) for key in states["stopped"]} == states["stopped"]
    assert [(r["epoch"], r["lr"], r["val_acc"]) for r in resumed["history"]] == [
        (r["epoch"], r["lr"], r["val_acc"]) for r in whole["history"]]


def test_the_recipe_search_draws_every_schedule():
    trial = optuna.create_study().ask()
    search.suggest_recipe(trial)
    assert trial.distributions["schedule"].choices == ("none", "cosine")
