"""neuroshrink/models.py: the models a user has, by name (torchvision's registry), as an
nn.Module or a callable of none, with local weights, through the demo for real."""
import json
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import train_phase2
from conftest import DIGITS, fails, run, sweep_here, within_budget
from experiments.shrink import command as shrink
from experiments.shrink.methods import BY_NAME
from neuroshrink import models, placement
from neuroshrink.config import RunConfig
from neuroshrink.errors import UsageError


FIXED_RES = """
import torch.nn as nn


class FixedRes(nn.Module):
    \"\"\"A user's model of fixed widths: a residual block around a depthwise convolution.\"\"\"

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.down(nn.functional.relu(x + self.block(x))))
"""


class FixedNet(nn.Module):
    """A user's model with widths of its own and no constructor arguments."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.body(x))


def test_a_squeeze_and_excitation_blocks_pooled_convolutions_are_not_a_collapsed_feature_map():
    """MobileNetV3's squeeze-and-excitation 1 x 1 convolutions see one position by design; at 32 x 32
    only its last two depthwise convolutions do (it said 50 of 52 convolutions from features.1 on)."""
    model = models.factory_of("torchvision:mobilenet_v3_small")(in_channels=3, image_size=32, num_classes=10,
                                                                 width=1.0)
    assert models.collapse(model, 3, 32).startswith(
        "the feature map is 1 x 1 from features.10.block.1.0 on (2 of its 12 spatial convolutions see one position)")
    assert models.collapse(model, 3, 64) is None


def test_batchnorm_that_follows_its_batches_too_slowly_for_a_short_run_is_raised_to_the_default_and_said():
    """torchvision's MobileNetV3 keeps its BatchNorm statistics with momentum 0.01: after a short
    run they are still near their start, and in eval mode the model answered every image alike."""
    model = models.factory_of("torchvision:mobilenet_v3_small")(in_channels=3, image_size=32, num_classes=10,
                                                                 width=1.0)
    slow = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert slow and {m.momentum for m in slow} == {0.01}
    line = models.batchnorm_line(model)
    assert line.startswith(f"BatchNorm momentum 0.01 raised to PyTorch's default 0.1 in {len(slow)} layers")
    assert {m.momentum for m in slow} == {0.1}
    assert models.batchnorm_line(model) is None  # the default, and the built-in models': nothing to say
    assert models.batchnorm_line(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, momentum=None))) is None


def test_a_torchvision_model_by_name_trains_on_grey_images_with_its_blocks_as_the_maintainer_converts_them(
        tmp_path, capsys):
    result, _ = run(tmp_path, "--quick", "--epochs", "2", "--train-images", "256", "--model", "torchvision:resnet18",
                    "--placement", "blocks", "--width", "0.125")  # narrowed: 1/8 of its channels, 176,578 parameters
    printed = capsys.readouterr().out
    assert "model: torchvision:resnet18's first convolution (conv1) reads 1 channel(s) instead of 3" in printed
    assert "model: the feature map is 1 x 1 from layer2.0.conv2 on (11 of its 17 spatial convolutions" in printed  # 8 x 8
    assert result["settings"]["model"] == "torchvision:resnet18" and result["phase1"]["params"] == 176_578
    assert result["phase1"]["dendrite_modules"] == [".layer3.0", ".layer3.1", ".layer4.0", ".layer4.1"]
    assert result["final"]["onnx"]["test_acc"] == pytest.approx(result["final"]["test_acc"])


def test_an_unknown_torchvision_name_and_a_budget_out_of_reach_are_one_line(tmp_path, capsys):
    assert "not a classification model of torchvision; choose from resnet" in fails(
        ["--model", "torchvision:resnet7", "--quick"], capsys)
    with pytest.raises(UsageError, match="--params 5: the nearest width, 0.00390625, gives 30 parameters, more than 10% "
                                         "from 5; head \\(Linear\\) alone keeps 20"):  # 1 channel left
        train_phase2.run(RunConfig(model=FixedNet(), params=5, no_dendrites=True, quick=True), tmp_path / "small")
    with pytest.raises(UsageError, match="keeps at most all its channels"):
        train_phase2.run(RunConfig(model="torchvision:resnet18", width=2.0, quick=True), tmp_path / "wide")
    assert not (tmp_path / "wide").exists()


@pytest.mark.parametrize("name, keep, params", [("resnet18", 1 / 8, 176_578), ("mobilenet_v3_small", 1 / 4, 111_434)])
def test_a_model_of_fixed_widths_narrows_every_layer_alike_with_its_coupled_channels(name, keep, params):
    """width < 1: every layer keeps that fraction of its channels (at least one), channels that a
    residual sum or a depthwise convolution ties cut together, the classes and the input's
    channels kept; then re-initialised."""
    import torchvision

    factory, full = models.factory_of(f"torchvision:{name}"), torchvision.models.get_model(name, num_classes=10)
    model = factory(**DIGITS, width=keep)
    assert sum(p.numel() for p in model.parameters()) == params
    layers = dict(full.named_modules())
    for layer_name, layer in model.named_modules():
        if isinstance(layer, nn.Conv2d) and layer_name != models.stem(model)[0] or isinstance(layer, nn.BatchNorm2d):
            before = layers[layer_name].out_channels if isinstance(layer, nn.Conv2d) else layers[layer_name].num_features
            after = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.num_features
            assert after == max(1, int(before * keep)), layer_name
    assert model.get_submodule(models.stem(model)[0]).in_channels == 1
    assert [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features == 10
    marked = FixedNet()
    with torch.no_grad():
        marked.body[0].weight.fill_(7.0)  # a weight no initialisation draws
    narrow = models.factory_of(marked)(**DIGITS, width=0.5)
    assert narrow.body[0].out_channels == 2 and not (narrow.body[0].weight == 7.0).any()  # re-initialised
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)  # the residual sums still add alike channels


def test_a_budget_for_a_model_of_fixed_widths_narrows_it_and_says_so(tmp_path, capsys):
    result, _ = run(tmp_path, "--quick", "--epochs", "1", "--train-images", "256", "--model",
                    "torchvision:mobilenet_v3_small", "--params", "30000", "--no-dendrites")
    assert within_budget(result["final"]["params"], 30000)
    assert f"narrowed to width {result['settings']['width']:.4g}: each layer keeps" in capsys.readouterr().out
    with pytest.raises(UsageError, match="--weights: at width 0.5 the model is narrowed and re-initialised"):
        train_phase2.run(RunConfig(model=FixedNet(), width=0.5, weights=str(tmp_path / "w.pt"), quick=True),
                         tmp_path / "weights")


def test_an_nn_module_or_a_callable_of_none_trains_through_run_as_a_fresh_copy(tmp_path):
    instance = FixedNet()
    before = {k: v.clone() for k, v in instance.state_dict().items()}
    result = train_phase2.run(RunConfig(model=instance, quick=True, epochs=2, no_dendrites=True, precision="fp32"),
                              tmp_path / "instance")
    assert result["settings"]["model"] == f"{__name__}:FixedNet" and result["final"]["params"] == 90
    assert all(torch.equal(v, instance.state_dict()[k]) for k, v in before.items())  # the user's own untouched
    made = models.factory_of(FixedNet)  # a class of no arguments: called, not given the data's shape
    assert getattr(made, "fixed_width", False) and isinstance(made(**DIGITS, width=0.5), FixedNet)
    with pytest.raises(UsageError, match="a callable of \\(in_channels, image_size, num_classes, width\\), or of no"):
        models.factory_of(lambda depth: FixedNet())


def test_local_weights_load_where_they_fit_and_a_colour_stem_is_summed_for_grey(tmp_path):
    import torchvision

    source = torchvision.models.resnet18(weights=None)  # 1,000 classes, colour: as a user's checkpoint
    torch.save(source.state_dict(), tmp_path / "resnet18.pt")
    model = models.factory_of("torchvision:resnet18")(**DIGITS)
    line = models.load_weights(model, tmp_path / "resnet18.pt", 1)
    n = len(model.state_dict())
    assert line.startswith(f"weights: {n - 2} of the model's {n} tensors from")
    assert line.endswith("left as initialised: fc.weight, fc.bias")  # 1,000 classes there, 10 here
    assert torch.allclose(model.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    torch.save({"not": "a model"}, tmp_path / "other.pt")
    with pytest.raises(UsageError, match="none of its 1 tensors fits the model"):
        models.load_weights(model, tmp_path / "other.pt", 1)


def test_a_study_of_a_model_of_fixed_widths_meets_its_budgets_by_narrowing_it(tmp_path, monkeypatch):
    """No width multiplier: the default budgets (1/2, 1/4, 1/8 of the model) are met by narrowing
    it, for the plain model and for the dendritic one with its set; a study trains at one."""
    (tmp_path / "user_fixed.py").write_text(FIXED_RES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    args = SimpleNamespace(dataset="folder:x", model="user_fixed:FixedRes", methods=["plain", "dendritic"], wide=1.0,
                           max_dendrites=1)
    budgets = shrink.default_budgets(args, DIGITS)
    assert budgets == [2829, 1414, 707]  # of 5,659
    for budget in budgets:
        plain = models.factory_of(args.model)(**DIGITS, width=shrink.width_for(args, BY_NAME["plain"], budget, DIGITS))
        dendritic = models.factory_of(args.model)(**DIGITS,
                                                  width=shrink.width_for(args, BY_NAME["dendritic"], budget, DIGITS))
        assert within_budget(sum(p.numel() for p in plain.parameters()), budget)
        assert within_budget(placement.count_with_sets(dendritic, 1, "all"), budget)
    sweep_here(tmp_path, "--model", "user_fixed:FixedRes", "--budgets", "1414", "--methods", "dendritic", "matched",
               "--trials", "1", "--recipe", "default", script="shrink")
    params = {method: json.loads(next((tmp_path / "runs").rglob(f"*b1414-{method}-seeds/s1/results.json"))
                                 .read_text())["final"]["params"] for method in ("dendritic", "matched")}
    assert within_budget(params["matched"], 1414) and params["dendritic"] <= 1.1 * 1414, params  # the set: if added
