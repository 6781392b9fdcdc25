"""neuroshrink/models.py: the models a user has, by name (torchvision's registry), as an
nn.Module or a callable of none, with local weights, through the demo for real."""
import pytest
import torch
import torch.nn as nn

import train_phase2
from conftest import DIGITS, fails, run
from neuroshrink import models
from neuroshrink.config import RunConfig
from neuroshrink.errors import UsageError


class FixedNet(nn.Module):
    """A user's model with widths of its own and no constructor arguments."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.body(x))


def test_a_torchvision_model_by_name_trains_on_grey_images_with_its_blocks_as_the_maintainer_converts_them(
        tmp_path, capsys):
    result, _ = run(tmp_path, "--quick", "--epochs", "2", "--train-images", "256", "--model", "torchvision:resnet18",
                    "--placement", "blocks")
    printed = capsys.readouterr().out
    assert "model: torchvision:resnet18's first convolution (conv1) reads 1 channel(s) instead of 3" in printed
    assert "model: the feature map is 1 x 1 from layer2.0.conv1 on (15 of its 20 convolutions" in printed  # 8 x 8: small
    assert result["settings"]["model"] == "torchvision:resnet18"
    assert result["phase1"]["dendrite_modules"] == [".layer3.0", ".layer3.1", ".layer4.0", ".layer4.1"]
    assert result["final"]["onnx"]["test_acc"] == pytest.approx(result["final"]["test_acc"])


def test_an_unknown_torchvision_name_and_a_budget_for_fixed_widths_are_one_line(capsys):
    assert "not a classification model of torchvision; choose from resnet" in fails(
        ["--model", "torchvision:resnet7", "--quick"], capsys)
    with pytest.raises(UsageError, match="has widths of its own, none to scale to a budget"):
        train_phase2.build.width_for_budget("torchvision:resnet18", 5000, train_phase2.build.splits_of(
            RunConfig(quick=True).resolved()))


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
