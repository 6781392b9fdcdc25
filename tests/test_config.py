"""neuroshrink/config.py: every setting declared once, the command lines generated from it, a
recipe applied once, old records migrated; and the Python API, run(RunConfig(...))."""
import dataclasses
import importlib
import json
import re
import shlex

import pytest
import torch.nn as nn

import train_phase2
from conftest import ROOT, metrics, stopped_after, sweep_run
from experiments import run as run_command
from experiments import width_sweep
from experiments.common import runner
from neuroshrink.config import QUICK, RunConfig, flag
from neuroshrink.options import all_names, demo_names, sweep_names
from neuroshrink.errors import UsageError
from neuroshrink.recipes import RECIPES
from neuroshrink.records import BEFORE_IT_EXISTED, SCHEMA, migrate


def options(parser):
    return {option for action in parser._actions for option in action.option_strings if option.startswith("--")}


def test_every_command_line_is_generated_from_the_config():
    fields = {flag(name) for name in all_names()}
    modes = {"--help", "--out", "--resume", "--evaluate"}
    assert options(run_command.get_args_parser()) == fields | modes | {"--no-channels-last"}
    demo = options(train_phase2.get_args_parser())
    assert demo == {flag(name) for name in demo_names()} | modes
    assert len(demo) <= 27  # the demo's --help: what a hackathon reader needs, not the experiments' controls
    sweep = options(width_sweep.get_args_parser())
    assert fields & sweep == {flag(name) for name in sweep_names()}
    assert set(runner.SHARED) == {"recipe", "epochs", "precision", "patience", "max_dendrites", "quick"}


def test_the_usage_page_documents_every_setting_in_its_place():
    """docs/usage.md has a table of the demo's flags and one of the other settings: each names
    exactly the config's fields of its kind, so the page cannot drift from the code."""
    page = (ROOT / "docs" / "usage.md").read_text()
    demo_table, other_table = (next(chunk for chunk in page.split(heading)[1].split("\n\n") if chunk.startswith("| flag"))
                               for heading in ("## Flags\n", "## Every other setting\n"))
    first_column = re.compile(r"^\| `(--[a-z0-9-]+)`", re.MULTILINE)
    assert set(first_column.findall(demo_table)) == {flag(n) for n in demo_names()} | {"--out", "--resume",
                                                                                        "--evaluate"}
    assert set(first_column.findall(other_table)) == {flag(n) for n in all_names()} - {flag(n) for n in demo_names()}


@pytest.mark.parametrize("settings, message", [
    (dict(recipe="fast"), "--recipe fast: choose from default, strong"),
    (dict(width=0), "--width: '0' must be a finite number > 0"),
    (dict(improvement_threshold=[0.01, -1]), "--improvement-threshold: '-1' must be a finite number >= 0"),
    (dict(dendrite_activation="gelu"), "--dendrite-activation gelu: choose from sigmoid, relu, tanh"),
])
def test_a_bad_setting_from_python_is_the_command_lines_one_line_error(settings, message):
    with pytest.raises(UsageError) as error:
        RunConfig(**settings)
    assert str(error.value) == message


@pytest.mark.parametrize("settings, message", [
    (dict(compile=True), "--compile: plain runs only (add --no-dendrites)"),
    (dict(params=1000), "--params: only for plain runs (add --no-dendrites)"),
    (dict(no_dendrites=True, capacity_test=True), "--capacity-test: the library's test, not for plain runs"),
])
def test_settings_that_do_not_go_together_are_refused_when_resolved(settings, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        RunConfig(**settings).resolved()


def test_the_settings_marked_plain_only_are_the_ones_a_dendritic_run_refuses():
    marked = [f.name for f in dataclasses.fields(RunConfig) if f.metadata["plain_only"]]
    assert marked == ["params", "prune_from", "restart_at", "lr_trace"]  # the controls' and pruning's settings
    values = dict(params=1000, prune_from="PAI", restart_at=(3,), lr_trace=(0.001,))
    for name in marked:
        with pytest.raises(UsageError, match=re.escape(f"{flag(name)}: only for plain runs (add --no-dendrites)")):
            RunConfig(**{name: values[name]}).resolved()


@pytest.mark.parametrize("settings", [{}, dict(recipe="strong"), dict(recipe="strong", no_dendrites=True, epochs=40),
                                      dict(recipe="strong", dataset="fashion-mnist", lr=0.01, quick=True),
                                      dict(no_dendrites=True, quick=True, min_epochs=50)])
def test_a_recipe_is_applied_once_and_what_is_given_stays(settings):
    config = RunConfig(**settings).resolved()
    assert config.resolved() == config  # a sweep resolves a config its run resolves again
    capped_by_quick = ("min_epochs",) if config.quick else ()
    assert all(getattr(config, key) == value for key, value in settings.items() if key not in capped_by_quick)
    recipe = RECIPES[config.recipe]
    assert config.optimizer == settings.get("optimizer", recipe["optimizer"])
    assert config.weight_decay == recipe["weight_decay"]


def test_quick_caps_the_epochs_before_a_schedule_takes_their_length():
    """As the code before RunConfig resolved it: a sweep finds its old --quick runs the same."""
    quick = RunConfig(quick=True).resolved()
    assert quick.epochs == quick.schedule_epochs == QUICK["epochs"] and quick.patience == QUICK["patience"]


def old_record(record):
    """`record` as the code before RunConfig wrote it: the command line's namespace as its
    settings, without the settings added with the recipes; no schema, no out."""
    settings = {k: v for k, v in record["settings"].items() if k not in BEFORE_IT_EXISTED and k != "schedule_epochs"}
    settings |= {"out": record["out"], "evaluate": False, "resume": False}
    return {k: v for k, v in record.items() if k not in ("schema", "out")} | {"settings": settings}


def test_a_run_recorded_by_the_old_code_resumes_and_its_sweep_reuses_it(tmp_path, monkeypatch, capsys):
    """A run stopped under the code before RunConfig (its record rewritten into that form)
    resumes to the result of an uninterrupted run, and a sweep cell of the same settings
    records the finished run instead of training it again."""
    args = width_sweep.get_args_parser().parse_args(["--quick", "--epochs", "4", "--precision", "fp32"])  # old: fp32
    cell = {"width": 0.0625, "method": "plain", "seed": 1, "min_epochs": 4}
    whole = runner.run_in(runner.cell_config(args, cell), tmp_path / "whole")
    folder = tmp_path / "old"
    with stopped_after(monkeypatch, 2):
        runner.run_in(runner.cell_config(args, cell), folder)
    stopped = json.loads((folder / "results.json").read_text())
    (folder / "results.json").write_text(json.dumps(old_record(stopped)))
    assert migrate(old_record(stopped))["settings"] == stopped["settings"]  # as it trained
    resumed = train_phase2.resume(folder)
    assert metrics(resumed) == metrics(whole)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run of the same settings was trained again")
    monkeypatch.setattr(train_phase2, "run", no_training)
    monkeypatch.setattr(train_phase2, "resume", no_training)
    assert sweep_run(args, cell, folder)["test_acc"] == whole["final"]["test_acc"]
    assert "holds this run, finished: recording it" in capsys.readouterr().out


def small_cnn(in_channels, image_size, num_classes, width):
    channels = max(1, round(16 * width))
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * channels, num_classes))


def test_the_python_api_trains_a_users_own_module_factory(tmp_path):
    """The README's call, from a notebook: a factory object instead of a module:factory name."""
    config = RunConfig(model=small_cnn, width=0.5, quick=True, epochs=3, graph_at_end=True)
    record = train_phase2.run(config, tmp_path / "mine")
    assert record == json.loads((tmp_path / "mine" / "results.json").read_text())
    assert record["schema"] == SCHEMA and record["status"] == "complete" and record["out"] == str(tmp_path / "mine")
    assert record["settings"]["model"] == "test_config:small_cnn" and record["phase1"]["dendrite_modules"]
    assert 0 <= record["final"]["test_acc"] <= 100 and record["final"]["onnx"]["bytes"] > 0
    assert (tmp_path / "mine" / "model.onnx").is_file() and (tmp_path / "mine" / "mine.png").is_file()
    assert dataclasses.replace(RunConfig.of_record(record), model=small_cnn).defining() == config.resolved().defining()


def shown_commands(text):
    """(command, script, experiment, its arguments) of each `python train_phase2.py ...` and
    `python -m experiments.<name> ...` a markdown page shows, in code blocks or inline."""
    blocks = [line for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S) for line in block.splitlines()]
    inline = [span.replace("\n", " ") for span in re.findall(r"`([^`]*)`", re.sub(r"```.*?```", "", text, flags=re.S))]
    for line in blocks + inline:
        command = line.split(" #")[0].strip().rstrip("&").strip()
        found = re.match(r"(?:\.venv/bin/)?python3? (train_phase2\.py|-m experiments\.(\w+))(.*)", command)
        if found and not re.search(r"\.\.\.|\$|--help", command):  # a pattern, a shell variable, the help
            yield command, *found.groups()


def test_every_command_the_docs_show_parses():
    """The README's and docs' commands are the command lines' as generated: an experiments-only
    setting shown with train_phase2.py would fail here."""
    shown = [(page.name, *command) for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
             for command in shown_commands(page.read_text())]
    assert len(shown) > 40
    for page, command, script, experiment, arguments in shown:
        module = train_phase2 if script == "train_phase2.py" else importlib.import_module(f"experiments.{experiment}")
        try:
            module.get_args_parser().parse_args(shlex.split(arguments))
        except SystemExit:
            pytest.fail(f"{page}: {command}")
