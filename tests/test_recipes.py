"""neuroshrink/recipes.py and --recipe: the schedules, and every part of the strong recipe
reaching the optimizer, the loss and the batches of a real run."""
import pickle

import pytest
import torch

import train_phase2
from conftest import config, run
from neuroshrink.recipes import RECIPES, Recipe, WarmupCosine


def lrs(recipe, steps):
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = recipe.build(model.parameters())
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warm_up_then_cosine_to_zero_then_zero():
    got = lrs(Recipe("adamw", 0.3, "cosine", schedule_epochs=6, warmup=2), 8)
    assert got[:3] == pytest.approx([0.1, 0.2, 0.3])                 # linear warm-up to the learning rate
    assert got[3] == pytest.approx(0.15 * (1 + torch.cos(torch.tensor(torch.pi / 4)).item()))
    assert got[2:7] == sorted(got[2:7], reverse=True) and got[6:] == [0.0, 0.0]


def test_cosine_without_warm_up_is_the_schedule_committed_runs_used():
    model = torch.nn.Linear(2, 2)
    _, scheduler = Recipe("adam", 1e-3, "cosine", schedule_epochs=60).build(model.parameters())
    assert type(scheduler) is torch.optim.lr_scheduler.CosineAnnealingLR and scheduler.T_max == 60


def test_the_schedule_pickles_as_the_library_saves_it():
    _, scheduler = Recipe("adamw", 1e-3, "cosine", schedule_epochs=10, warmup=2).build(torch.nn.Linear(2, 2).parameters())
    again = pickle.loads(pickle.dumps(scheduler))
    assert isinstance(again, WarmupCosine) and (again.total, again.warmup) == (10, 2)


def test_weight_decay_reaches_the_optimizer():
    optimizer, _ = Recipe("adamw", 1e-3, weight_decay=0.05).build(torch.nn.Linear(2, 2).parameters())
    assert type(optimizer) is torch.optim.AdamW and optimizer.param_groups[0]["weight_decay"] == 0.05


def settings(*flags):
    return config("--dataset", "fashion-mnist", *flags).resolved()


def test_strong_recipe_defaults_and_what_a_flag_overrides():
    args = settings("--recipe", "strong", "--no-dendrites", "--lr", "0.01")
    strong = RECIPES["strong"]
    assert (args.optimizer, args.weight_decay, args.label_smoothing, args.batch_size, args.warmup) == (
        strong["optimizer"], strong["weight_decay"], strong["label_smoothing"], strong["batch_size"], strong["warmup"])
    assert args.lr == 0.01 and args.augment == "shift-flip"
    assert args.epochs == args.schedule_epochs == args.min_epochs == 30  # a plain run: the fixed budget
    longer = settings("--recipe", "strong", "--no-dendrites", "--epochs", "40")
    assert longer.epochs == longer.schedule_epochs == longer.min_epochs == 40
    dendritic = settings("--recipe", "strong")
    assert dendritic.epochs == 200 and dendritic.schedule_epochs == 30  # a new schedule per architecture
    assert dendritic.switch == "fixed"  # dendrites as a schedule ends, not mid-schedule
    digits = config("--recipe", "strong").resolved()
    assert (digits.batch_size, digits.augment) == (32, "none")  # the digits variant
    default = settings()
    assert (default.optimizer, default.lr, default.batch_size, default.augment, default.weight_decay,
            default.switch) == ("adam", 1e-3, 64, "none", 0.0, "history")  # committed commands mean what they meant
    assert default.schedule_epochs == default.epochs == 200


@pytest.fixture(scope="module")
def strong_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("strong")
    return {kind: run(tmp, "--quick", "--recipe", "strong", "--model", "compact", "--graph-at-end", *flags, out=kind)[0]
            for kind, flags in (("plain", ["--no-dendrites", "--epochs", "3"]),
                                ("dendritic", ["--schedule-epochs", "3"]),
                                ("unsmoothed", ["--no-dendrites", "--epochs", "3", "--label-smoothing", "0"]))} | {"tmp": tmp}


@pytest.mark.parametrize("kind", ["plain", "dendritic"])
def test_a_strong_run_completes_and_its_export_reproduces_it(strong_runs, kind):
    result = strong_runs[kind]
    assert result["status"] == "complete" and result["settings"]["recipe"] == "strong"
    assert {row["weight_decay"] for row in result["history"]} == {RECIPES["strong"]["weight_decay"]}
    evaluated = train_phase2.evaluate_saved(strong_runs["tmp"] / kind)
    assert evaluated["test_acc"] == pytest.approx(result["final"]["test_acc"])


def test_the_dendritic_strong_run_adds_dendrites_as_its_schedule_ends_and_starts_another(strong_runs):
    result = strong_runs["dendritic"]
    assert result["settings"]["switch"] == "fixed"
    assert (result["restructures"][0]["epoch"], result["restructures"][0]["kind"]) == (3, "dendrites added")
    # The library's learning-rate search is off: its reloads would eat the new schedule's epochs.
    assert "reloaded" not in {r["kind"] for r in result["restructures"]}
    lrs = [row["lr"] for row in result["history"]]
    assert lrs[3] < lrs[2] and lrs[4] > lrs[3]  # after the restructure, a new warm-up


def test_label_smoothing_reaches_the_loss(strong_runs):
    smoothed, unsmoothed = strong_runs["plain"], strong_runs["unsmoothed"]
    assert smoothed["settings"]["label_smoothing"] == 0.1 and unsmoothed["settings"]["label_smoothing"] == 0
    assert smoothed["history"][0]["train_loss"] > unsmoothed["history"][0]["train_loss"]  # a smoothed target costs more
