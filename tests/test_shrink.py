"""experiments/shrink/: every way of shrinking a CNN, trained for real on tiny data: the
library's recipes with their restart control, the matched control, and the sweep that pairs them."""
import argparse
import json
import os
import traceback
from pathlib import Path

import pytest

import train_phase2
from conftest import built_once, sweep_here, within_budget
from experiments.common import spaces, studies
from experiments.shrink import methods, stages
from experiments.shrink import command as shrink
from experiments.shrink import report as shrink_report
from neuroshrink.errors import UsageError


RECIPE_METHODS = ("dendritic-mnist", "plain-mnist", "restarts-mnist")


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
        return studies.records(studies.open_study(url, f"shrink-digits-net-b1000-{method}-{stage}"))
    return {"tmp": tmp, "output": output, "records": records}


def history(record):
    return json.loads((Path(record["run"]) / "results.json").read_text())


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


def calls_to_the_run():
    """The calls from shrink's main() to the running train_phase2.run, by name (Optuna's own
    frames as one call, "Optuna")."""
    names = []
    for frame in traceback.extract_stack()[:-2]:  # up to the run's caller
        if frame.name == "main" and frame.filename.endswith(str(Path("experiments", "shrink", "command.py"))):
            names = []
        name = "Optuna" if f"{os.sep}optuna{os.sep}" in frame.filename else frame.name
        if not names or name != names[-1] or name != "Optuna":
            names.append(name)
    return names


def recording_calls(folder, train):
    """train(), with the calls that led to every train_phase2.run written to folder/calls.json;
    returns what train() returned."""
    real, paths = train_phase2.run, []

    def run(config, out="PAI"):
        paths.append(calls_to_the_run())
        return real(config, out)
    train_phase2.run = run
    try:
        printed = train()
    finally:
        train_phase2.run = real
    (folder / "calls.json").write_text(json.dumps(paths))
    return printed


@pytest.fixture(scope="session")
def matched_sweep(tmp_path_factory):
    """dendritic and matched at one budget, 1 search trial and 1 seed; every run's call path recorded."""
    return built_once(tmp_path_factory, "matched_sweep", lambda folder: recording_calls(folder, lambda: sweep_here(
        folder, "--budgets", "1000", "--trials", "1", "--seeds", "1", "--methods", "dendritic", "matched",
        script="shrink")))


def test_a_run_is_seven_calls_from_the_command(matched_sweep):
    """From shrink's main() to train_phase2.run, every stage's run: at most 7 calls, top-down."""
    paths = json.loads((matched_sweep / "calls.json").read_text())
    assert paths[0] == ["main", "search_method", "search", "Optuna", "objective", "train", "run_in"]  # dendritic's
    seeds = ["main", "train_seeds", "work", "Optuna", "objective", "train", "run_in"]
    assert paths[1:] == [seeds, seeds]  # the dendritic seed, then matched's (it takes dendritic's choice)


def test_the_matched_control_trains_as_its_dendritic_run_without_dendrites(matched_sweep):
    """This project's recipe: matched takes the dendritic search's configuration, not one of
    its own, so that its seeds differ from the dendritic run's in the dendrites alone."""
    url = f"sqlite:///{matched_sweep / 'results' / 'digits' / 'sweep.db'}"
    dendritic, matched = (studies.records(studies.open_study(url, f"shrink-digits-net-b1000-{m}-seeds"))[0]
                          for m in ("dendritic", "matched"))
    library = {"improvement_threshold", "candidate_init", "dendrite_activation"}  # the library's settings
    only_dendritic = library | {"layout", "restructure_lr", "switch_patience"}  # and its maintainer's (--maintainer)
    assert spaces.dendrite_settings() == only_dendritic and dendritic["hp"].keys() & only_dendritic == library
    assert matched["hp"] == {k: v for k, v in dendritic["hp"].items() if k not in only_dendritic}
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
    evaluated = train_phase2.evaluate_saved(control["run"])
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
    with_dropout = argparse.Namespace(model_has_dropout=True, recipe="default", allow_zero_decay=False,
                                 maintainer=False)
    without = argparse.Namespace(model_has_dropout=False, recipe="default", allow_zero_decay=False,
                                 maintainer=False)
    assert methods.without_repeats(with_dropout, methods.BY_NAME["plain-mnist"]) == 3
    assert methods.without_repeats(with_dropout, methods.BY_NAME["restarts-api"]) == 3  # its plain recipe's
    assert methods.without_repeats(with_dropout, methods.BY_NAME["dendritic-mnist"]) == 3 * 2 * 2 * 3
    assert methods.without_repeats(without, methods.BY_NAME["dendritic-api"]) == 2 * 2 * 3
    assert methods.without_repeats(with_dropout, methods.BY_NAME["plain"]) is None  # a learning rate, continuous
    assert methods.without_repeats(without, methods.BY_NAME["plain-mnist"]) is None  # nothing to tune: one trial


def test_a_search_whose_trials_all_scored_the_same_is_reported_undecided(tmp_path):
    """Every model of a search trained dead (10 % on 10 classes): max() keeps the first drawn,
    and the report says that the search chose nothing."""
    def search_study(name, values):
        study = studies.open_study(f"sqlite:///{tmp_path / 'sweep.db'}", name)
        study.set_user_attr("trials", len(values))
        for i, value in enumerate(values):
            studies.add_record(study, {"trial": i}, {"hp": {"dropout": 0.1 * (i + 1)}}, value)
        return study
    assert stages.chosen(search_study("dead", [10.0, 10.0, 10.0])) == ({"dropout": 0.1}, 10.0)
    assert stages.chosen(search_study("alive", [10.0, 85.0, 10.0])) == ({"dropout": 0.2}, None)
    assert stages.chosen(search_study("one trial", [10.0])) == ({"dropout": 0.1}, None)  # nothing to choose from
    assert "search undecided: every trial 10.00 % on validation" in shrink_report.undecided_note(10.0)
    assert shrink_report.undecided_note(None) == ""


def test_a_method_without_the_runs_it_pairs_with_is_refused():
    with pytest.raises(UsageError, match="restarts-api needs dendritic-api and plain-api as well"):
        shrink.check_methods(["restarts-api"])
    with pytest.raises(UsageError, match="matched needs dendritic as well"):
        shrink.check_methods(["matched"])
    shrink.check_methods([m.name for m in shrink.METHODS])  # every method: nothing missing


def test_a_budget_a_method_cannot_meet_is_refused_before_training(tmp_path):
    with pytest.raises(UsageError, match="--budgets 300: dendritic cannot have 300 parameters with rescnn"):
        sweep_here(tmp_path, "--model", "rescnn", "--budgets", "300", script="shrink")
    assert not (tmp_path / "runs").exists()


def test_report_only_reproduces_the_report(recipe_sweep):
    path = recipe_sweep["tmp"] / "results" / "digits" / "shrink-net.md"
    before = path.read_text()
    output = sweep_here(recipe_sweep["tmp"], "--report-only", "--budgets", "1000", "--trials", "3", "--methods",
                        *RECIPE_METHODS, script="shrink")
    assert "=== " not in output  # nothing trained
    assert path.read_text() == before


def test_a_strong_study_stored_before_an_option_existed_continues_with_its_default(tmp_path):
    """check_strong_settings: the options a study stored are compared, an option added since
    counts as its default, and another value is refused."""
    study = studies.open_study(f"sqlite:///{tmp_path / 'sweep.db'}", "strong")
    args = shrink.get_args_parser().parse_args(["--recipe", "strong"])
    args = shrink.with_defaults(args)
    old = {key: getattr(args, key) for key in stages.STRONG_DEFAULTS if key != "allow_zero_decay"}
    study.set_user_attr("strong", old)
    stages.check_strong_settings(study, args)
    args = args.but(allow_zero_decay=True)
    with pytest.raises(UsageError, match="holds runs made with --allow-zero-decay False, not True"):
        stages.check_strong_settings(study, args)


def test_the_maintainer_search_draws_a_layout_within_the_budget_and_its_control_replays_it(tmp_path_factory):
    """--maintainer: the dendritic search also draws placement and sets (a layout that meets the
    budget), the learning rate after a restructure and the switch's plateau, in studies of their
    own; matched replays the dendritic run's epochs and learning rates, added layer included."""
    tmp = built_once(tmp_path_factory, "maintainer_sweep", lambda folder: sweep_here(
        folder, "--recipe", "strong", "--maintainer", "--budgets", "3658", "--trials", "1", "--schedule-epochs", "2",
        "--methods", "dendritic", "matched", script="shrink"))
    output = (tmp / "output.txt").read_text()
    layouts = output.split("dendrite layouts within the budget: ")[1].splitlines()[0].split(", ")
    assert "all x1" in layouts and "later x1" in layouts
    url = f"sqlite:///{tmp / 'results' / 'digits' / 'sweep.db'}"
    dendritic, matched = (studies.records(studies.open_study(url, f"shrink-digits-net-strong-maintainer-b3658-{m}-seeds"))[0]
                          for m in ("dendritic", "matched"))
    hp = dendritic["hp"]
    assert hp["layout"] in layouts and hp["restructure_lr"] in spaces.RESTRUCTURE_LRS
    assert hp["switch_patience"] in spaces.SWITCH_PATIENCES
    where, sets, _ = spaces.parse_layout(hp["layout"])
    settings = history(dendritic)["settings"]
    assert (settings["placement"], settings["max_dendrites"]) == (where, sets)
    assert within_budget(dendritic["params"], 3658) or dendritic["dendrite_sets"] < sets  # with all its sets: the budget
    assert matched["hp"] == spaces.control(hp) and within_budget(matched["params"], 3658)
    assert matched["lrs"][:len(dendritic["lrs"])] == dendritic["lrs"] and matched["epochs"] >= dendritic["epochs"]
    assert history(matched)["settings"]["placement"] == ("head" if where == "head" else "all")
    assert (tmp / "results" / "digits" / "shrink-net-strong-maintainer.md").exists()


def test_the_dendritic_student_pairs_with_its_control_and_searches_both_spaces():
    with pytest.raises(UsageError, match="matched-distilled needs dendritic-distilled"):
        methods.check_methods(["matched-distilled", "distilled", "dendritic"])
    trial = methods.optuna.create_study().ask()
    hp = methods.suggest(trial, methods.BY_NAME["dendritic-distilled"], dropout=False, strong=True,
                         layouts=["all x1", "head16 x3"])
    assert {"distill_weight", "temperature", "candidate_init", "layout", "restructure_lr"} <= hp.keys()
    assert methods.BY_NAME["matched-distilled"].wide == "teacher"  # the same teacher, without dendrites


def test_a_searchs_switch_plateau_shrinks_with_its_schedule():
    """The search's reduction is the same for every part of a dendritic run: a 5-epoch schedule
    for a 15-epoch one, and a plateau of 2 epochs for 6."""
    args = argparse.Namespace(search_epochs=5, schedule_epochs=15, max_dendrites=1)
    hp = {"layout": "later x3", "switch_patience": 6}
    assert methods.configuration(args, hp, search=True)["patience"] == 2
    assert methods.configuration(args, hp)["patience"] == 6
    assert (methods.budget_epochs(args, True, hp), methods.budget_epochs(args, False, hp)) == (4 * 7, 4 * 21)
    assert methods.budget_epochs(args, False, {"layout": "all x1", "switch_patience": 0}) == 2 * 15  # as committed


def test_a_seed_run_times_nothing_its_reports_milliseconds_come_from_one_pass():
    """Neither recipe's seed runs time inference: a report's milliseconds come from one timing
    pass with nothing else running (--time-inference), not from each run as it ended, beside
    another worker's training (issue 47: time what is reported, once)."""
    wide = {seed: Path("wide") for seed in (1, 2)}
    for flags in (["--quick"], ["--quick", "--recipe", "strong"]):
        args = shrink.get_args_parser().parse_args(flags)
        assert all(methods.overrides(args, methods.BY_NAME[name], 1000, {}, seed, wide, 4).get("no_timing")
                   for name in ("plain", "matched", "distilled", "dendritic", "pruned") for seed in (1, 2))
