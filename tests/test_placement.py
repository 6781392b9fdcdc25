"""neuroshrink/placement.py: where dendrites go (all, later, head, blocks), what they cost before
any is added, checked against the library itself; and the learning rate after a restructure."""
import argparse
import contextlib
import io

import pytest
import torch
import torch.nn as nn

import train_phase2
from conftest import DIGITS, run, within_budget
from experiments.common import spaces
from experiments.shrink import methods
from model import MODELS, count_parameters
from neuroshrink import build, dendrites, placement
from neuroshrink.config import RunConfig
from neuroshrink.errors import UsageError


class SmallCNN(nn.Module):
    """A user's model: fixed widths, a BatchNorm, a classifier inside a Sequential."""

    def __init__(self, in_channels=1, image_size=8, num_classes=10, width=1.0):
        super().__init__()
        channels = max(1, round(8 * width))
        self.features = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(channels, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class NoLinear(nn.Module):
    def __init__(self, in_channels=1, image_size=8, num_classes=10, width=1.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def library_counts(tmp_path, monkeypatch, model, where, sets=5):
    """The library's count after each of `sets` dendrite sets, added one per epoch."""
    from perforatedai import globals_perforatedai as GPA

    monkeypatch.chdir(tmp_path)
    tracker = dendrites.PerforatedTracker("PAI", patience=1, max_dendrites=sets, placed=placement.place(model, where),
                                          graph_at_end=True)  # its graph, drawn after each set, is not asked about
    GPA.pc.set_switch_mode(GPA.pc.DOING_SWITCH_EVERY_TIME)
    with contextlib.redirect_stdout(io.StringIO()):
        model = tracker.convert(model)
    optimizer, counts = tracker.new_optimizer(model), [tracker.count_params(model)]
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for epoch in range(1, sets + 2):
        model.train()
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()  # the library learns the dendrites' shapes here
        optimizer.step()
        with contextlib.redirect_stdout(io.StringIO()):
            step = tracker.add_scores(model, epoch, 10.0 * epoch, 10.0 * epoch, 10.0 * epoch)  # always better
        model = step.model
        if step.complete:
            break
        counts.append(tracker.count_params(model))
        optimizer = tracker.new_optimizer(model)
    return counts


@pytest.mark.parametrize("name, where", [("net", "all"), ("net", "later"), ("net", "head"), ("rescnn", "blocks")])
def test_the_count_with_dendrite_sets_is_the_librarys_up_to_five(tmp_path, monkeypatch, name, where):
    """The study sizes a dendritic model to its budget with count_with_sets, before training it."""
    def plain():
        model = MODELS[name](width=0.125, **DIGITS)
        return placement.add_head(model, 1, 8) if where == "head" else model
    expected = [placement.count_with_sets(plain(), sets, where) for sets in range(6)]
    assert library_counts(tmp_path, monkeypatch, plain(), where) == expected


def phase1(result):
    return result["phase1"]["dendrite_modules"], result["phase1"]["placement"]


@pytest.mark.parametrize("where, modules", [
    ("all", [".conv1", ".conv2", ".fc1", ".fc2"]),
    ("later", [".fc1", ".fc2"]),
    ("head", [".fc2.pre_fc"]),
])
def test_each_placement_puts_dendrites_where_it_says(tmp_path, capsys, where, modules):
    result, _ = run(tmp_path, "--quick", "--epochs", "3", "--placement", where)
    assert phase1(result) == (modules, where)
    assert f"Phase 1: dendrite capacity on {', '.join(modules)}" in capsys.readouterr().out
    assert result["settings"]["placement"] == where


def test_blocks_convert_the_later_half_of_a_models_blocks_whole(tmp_path):
    result, _ = run(tmp_path, "--quick", "--epochs", "3", "--model", "rescnn", "--placement", "blocks")
    assert phase1(result) == ([".block2"], "blocks")  # block1, the stem, the downsampling and the head tracked


def test_a_users_factory_gets_its_head_layer_in_front_of_its_classifier(tmp_path):
    config = RunConfig(model=SmallCNN, quick=True, epochs=3, placement="head", precision="fp32")
    result = train_phase2.run(config, tmp_path / "PAI")
    assert phase1(result) == ([".classifier.1.pre_fc"], "head")
    built = placement.add_head(SmallCNN(width=0.125, **DIGITS), 1, 8)  # 1 channel: a 1 x 1 added layer
    assert result["settings"]["plain_params"] == count_parameters(built) == count_parameters(SmallCNN(width=0.125,
                                                                                                      **DIGITS)) + 2
    later = train_phase2.run(RunConfig(model=SmallCNN, quick=True, epochs=3, placement="later", precision="fp32"),
                             tmp_path / "later")
    assert phase1(later) == ([".classifier.1"], "later")  # 2 layers: the later one


def test_head_needs_a_final_linear_layer_and_says_so():
    config = RunConfig(model=NoLinear, placement="head", quick=True).resolved()
    with pytest.raises(UsageError, match="--placement head: --model .*NoLinear has no final linear layer"):
        build.model_of(config, build.splits_of(config))


def test_head_units_narrow_the_added_layer_and_rebuild_the_classifier():
    model = placement.add_head(MODELS["compact"](width=0.25, in_channels=1, image_size=28, num_classes=10), 1, 28, 16)
    head = model.head
    assert (head.pre_fc.in_features, head.pre_fc.out_features, head.classifier.in_features) == (32 * 49, 16, 16)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_a_plain_run_with_head_is_the_control_network_at_the_budget(tmp_path):
    """matched with a head layout: the same network, added layer included, without dendrites."""
    result, config = run(tmp_path, "--quick", "--epochs", "1", "--no-dendrites", "--params", "3000",
                         "--placement", "head")
    assert within_budget(result["final"]["params"], 3000)
    width = result["settings"]["width"]
    assert result["final"]["params"] == count_parameters(placement.add_head(MODELS["net"](width=width, **DIGITS), 1, 8))


@pytest.mark.parametrize("settings, message", [
    (dict(no_dendrites=True, placement="later"), "--placement later: only for dendritic runs"),
    (dict(head_units=16), "--head-units: only with --placement head"),
])
def test_placements_that_do_not_apply_are_refused(settings, message):
    with pytest.raises(UsageError, match=message):
        RunConfig(**settings).resolved()


def test_every_optimizer_after_a_restructure_trains_at_the_multiplied_rate(tmp_path):
    """The maintainer's x10 after a restructure, in the record's learning rate of each epoch."""
    result, _ = run(tmp_path, "--quick", "--capacity-test", "--restructure-lr", "10", "--graph-at-end", out="dendritic")
    assert [row["lr"] for row in result["history"][:3]] == pytest.approx([1e-3, 1e-2, 1e-2])  # a set per epoch
    plain, _ = run(tmp_path, "--quick", "--no-dendrites", "--epochs", "3", "--min-epochs", "3", "--restart-at", "1",
                   "--restructure-lr", "10", out="plain")
    assert [row["lr"] for row in plain["history"]] == pytest.approx([1e-3, 1e-2, 1e-2])


def test_the_maintainer_layouts_at_a_budget_all_meet_it():
    args = argparse.Namespace(model="compact", max_dendrites=1)
    shape = dict(in_channels=1, image_size=28, num_classes=10)
    small, large = (methods.layouts(args, budget, shape) for budget in (4700, 75000))
    assert "all x1" in small and "all x5" not in small and "all x5" in large
    for budget, found in ((4700, small), (75000, large)):
        for layout in found:
            where, sets, units = spaces.parse_layout(layout)
            width = methods.width_for(args, methods.BY_NAME["dendritic"], budget, shape, {"layout": layout})
            model = placement.add_head(MODELS["compact"](width=width, **shape), 1, 28, units) if where == "head" \
                else MODELS["compact"](width=width, **shape)
            assert within_budget(placement.count_with_sets(model, sets, where), budget), layout


def test_a_control_keeps_the_head_layer_and_drops_the_dendrites_settings():
    hp = {"lr": 0.003, "candidate_init": 0.1, "layout": "head16 x3", "restructure_lr": 10.0, "switch_patience": 3}
    assert spaces.control(hp) == {"lr": 0.003, "placement": "head", "head_units": 16}
    assert spaces.overrides(hp) == {"lr": 0.003, "candidate_init": 0.1, "placement": "head", "max_dendrites": 3,
                                    "head_units": 16, "restructure_lr": 10.0, "switch": "history", "patience": 3}
    assert spaces.control({"lr": 0.003, "layout": "later x5"}) == {"lr": 0.003}
