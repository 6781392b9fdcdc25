"""Where a model's dendrites go, and what they cost in parameters before any is added.

    all     every conv and linear layer (the library's default)
    later   the later half of the conv and linear layers, in the order the model holds them
    head    only an added linear layer in front of the classifier (PreFC); everything else
            tracked, as the library's maintainer runs ResNet-18 (its pre_fc, `--convert-count 0`)
    blocks  the later half of the model's blocks (a residual block, say), each converted whole,
            as the maintainer converts BasicBlock and Bottleneck

Plain PyTorch: the library is told through the module ids it should track (no dendrites) and
the class names it should convert whole (dendrites.configure). The added layer of `head` is part
of the architecture, so a plain run with `head` has it too: a control is the same network.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import count_parameters

from .errors import UsageError

PLACEMENTS = ("all", "later", "head", "blocks")
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # what the library wraps by default
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class PreFC(nn.Module):
    """A linear layer and ReLU in front of the classifier (the maintainer's pre_fc): as wide as
    the classifier's inputs, or `units` wide, the classifier then rebuilt to read them."""

    def __init__(self, classifier, units=None):
        super().__init__()
        features = classifier.in_features
        units = units or features
        self.pre_fc = nn.Linear(features, units)
        self.classifier = classifier if units == features else nn.Linear(units, classifier.out_features)

    def forward(self, x):                               # (N, features)
        return self.classifier(F.relu(self.pre_fc(x)))  # (N, classes)


def classifier_name(model, in_channels, image_size):
    """The name of the nn.Linear whose output is the model's output, or None."""
    called = []
    hooks = [m.register_forward_hook(lambda m, i, out, name=name: called.append((name, out)))
             for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            output = model.eval()(torch.zeros(2, in_channels, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
    return next((name for name, out in reversed(called) if out is output), None)


def add_head(model, in_channels, image_size, units=None, label="the model"):
    """`model` with a PreFC in front of its classifier (in place); UsageError where its output
    does not come from an nn.Linear."""
    name = classifier_name(model, in_channels, image_size)
    if name is None:
        raise UsageError(f"--placement head: {label} has no final linear layer (its output does not come from an "
                         "nn.Linear); choose all, later or blocks")
    parent, _, leaf = name.rpartition(".")
    holder = model.get_submodule(parent)
    setattr(holder, leaf, PreFC(getattr(holder, leaf), units))
    return model.train()


def layers(model):
    """Names of the conv and linear layers, in the order the model holds them."""
    return [name for name, m in model.named_modules() if isinstance(m, LAYERS)]


def blocks(model):
    """Names of the outermost modules that are neither containers nor the model and hold two or
    more conv or linear layers (a residual block)."""
    found = []
    for name, m in model.named_modules():
        inside = any(name.startswith(b + ".") for b in found)
        if name and not inside and not isinstance(m, CONTAINERS) and len(layers(m)) >= 2:
            found.append(name)
    return found


@dataclass(frozen=True)
class Placement:
    name: str
    dendrites: tuple  # the modules that get dendrites
    track: tuple      # library ids of the modules that do not ("." + their name)
    convert: tuple    # class names the library converts whole


def place(model, placement):
    """Which modules of the plain `model` get dendrites under `placement`."""
    names = layers(model)
    if placement == "all":
        return Placement(placement, tuple(names), (), ())
    if placement == "later":
        chosen = names[len(names) // 2:]
    elif placement == "head":
        chosen = [f"{name}.pre_fc" for name, m in model.named_modules() if isinstance(m, PreFC)]
        if not chosen:
            raise UsageError("--placement head: the model has no added layer before its classifier (build.model_of "
                             "adds it)")
    else:
        found = blocks(model)
        if not found:
            raise UsageError(f"--placement blocks: {type(model).__name__} has no blocks (modules that hold two or "
                             "more conv or linear layers); choose all, later or head")
        chosen = found[len(found) // 2:]
        earlier = found[:len(found) // 2]
        outside = [n for n in names if not any(n.startswith(b + ".") for b in found)]
        kinds = tuple(sorted({type(model.get_submodule(b)).__name__ for b in chosen}))
        return Placement(placement, tuple(chosen), tuple("." + n for n in earlier + outside), kinds)
    return Placement(placement, tuple(chosen), tuple("." + n for n in names if n not in chosen), ())


def outputs(module):
    """The units a dendrite adds one connection for: the module's output channels or features."""
    if isinstance(module, LAYERS):
        return module.out_channels if hasattr(module, "out_channels") else module.out_features
    return outputs([m for m in module.modules() if isinstance(m, LAYERS)][-1])  # a block: its last layer's


def count_with_sets(model, sets, placement="all"):
    """The library's parameter count of the plain `model` once it has `sets` dendrite sets. Each
    module with dendrites gains, per set, a copy of its parameters, and weights per output: one
    with the first set, 2k with the k-th (the connections among its dendrites and to its neuron;
    measured against perforatedai 3.2.9 up to 5 sets, tests/test_placement.py)."""
    modules = [model.get_submodule(name) for name in place(model, placement).dendrites]
    copies, units = sum(count_parameters(m) for m in modules), sum(outputs(m) for m in modules)
    per_output = 1 + sets * (sets + 1) - 2 if sets else 0  # 1 + 4 + 6 + ... + 2k
    return count_parameters(model) + sets * copies + per_output * units
