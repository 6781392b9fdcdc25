"""What --model names, as a factory `(in_channels, image_size, num_classes, width) -> nn.Module`:

    net, compact, ...        model.py's CNNs, whose widths scale with `width`
    package.module:factory   your own factory of that signature
    torchvision:NAME         a classification model of torchvision's registry
                             (`torchvision.models.list_models(module=torchvision.models)`), built
                             with `get_model(NAME, weights=None, num_classes=K)`; its first
                             convolution adapted to grey images (its RGB kernels summed)
    (from Python)            a factory; an nn.Module instance, or a callable of no arguments
                             returning one (each run trains a fresh copy)

A model of fixed widths (torchvision's, an instance, a zero-argument callable; `fixed_width`
says so) has no width multiplier: its `width` (at most 1, its default) is the fraction of its
channels each layer keeps, cut by torch-pruning and re-initialised (pruning.narrowed), which is
how a parameter budget is met for it. Pretrained weights come only from a file the user names
(`weights`), never downloaded.
"""

import copy
import importlib
import inspect
import os
import sys

import torch
import torch.nn as nn

from model import MODELS

from .errors import UsageError, first_line

TORCHVISION = "torchvision:"
WIDTH = 0.125  # the default width of a model that has a width multiplier (model.py's: net's 32, 64 channels -> 4, 8)


def factory_of(spec):
    """The factory --model names (see the module's docstring)."""
    if isinstance(spec, nn.Module):
        return fixed(lambda in_channels, num_classes: copy.deepcopy(spec), type(spec).__name__)
    if callable(spec):
        parameters = inspect.signature(spec).parameters.values()
        if {"in_channels", "image_size", "num_classes"} <= {p.name for p in parameters} or any(
                p.kind == p.VAR_KEYWORD for p in parameters):
            return spec  # a factory of the data's shape
        if all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
            return fixed(lambda in_channels, num_classes: spec(), spec.__name__)
        raise UsageError(f"--model {spec.__qualname__}: give a callable of (in_channels, image_size, num_classes, "
                         "width), or of no arguments, returning an nn.Module; or an nn.Module")
    if spec in MODELS:
        return MODELS[spec]
    if spec.startswith(TORCHVISION):
        return torchvision_factory(spec[len(TORCHVISION):])
    if ":" not in spec:
        import torchvision

        known = spec in torchvision.models.list_models(module=torchvision.models)
        raise UsageError(f"--model {spec}: unknown model; choose from {', '.join(MODELS)}, "
                         + (f"torchvision:{spec} (torchvision's)" if known else "torchvision:NAME")
                         + ", or give package.module:factory")
    module_name, _, name = spec.partition(":")
    if os.getcwd() not in sys.path:  # as `python -m` would: the user's module sits here
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise UsageError(f"--model {spec}: cannot import {module_name} ({first_line(e)})") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UsageError(f"--model {spec}: {module_name} has no callable {name!r}")
    return factory_of(factory)  # a factory of the data's shape, or a class or callable of no arguments


def name_of(spec):
    """The --model spec as a record holds it: a name, or module:qualname of a callable (of an
    instance: of its class)."""
    if isinstance(spec, str):
        return spec
    kind = type(spec) if isinstance(spec, nn.Module) else spec
    return f"{kind.__module__}:{kind.__qualname__}"


def stem_line(spec, model, in_channels):
    """One line where a torchvision model's colour stem was adapted to the data's channels."""
    name, conv = stem(model)
    if not (isinstance(spec, str) and spec.startswith(TORCHVISION)) or conv is None or in_channels == 3:
        return None
    return (f"{spec}'s first convolution ({name}) reads {in_channels} channel(s) instead of 3: its kernels over "
            "the three colours summed and shared out")


def default_width(spec):
    """The width a run of this model trains at unless told: the model as it is where its widths
    are fixed, otherwise WIDTH."""
    return 1.0 if getattr(factory_of(spec), "fixed_width", False) else WIDTH


def narrow_line(width):
    return (f"narrowed to width {width:.4g}: each layer keeps that fraction of its channels (torch-pruning, the "
            "coupled ones together), re-initialised")


def fixed(make, name):
    """A factory of a model whose widths are its own, `make(in_channels, num_classes)`: `width`
    below 1 keeps that fraction of its channels (see the module's docstring)."""
    def factory(in_channels=None, image_size=None, num_classes=None, width=1.0):
        model = make(in_channels, num_classes)
        if width > 1:
            raise ValueError(f"width {width:g}: a model of fixed widths keeps at most all its channels (width 1)")
        if width == 1:
            return model
        from .pruning import narrowed  # torch-pruning: only for a narrowed model

        return narrowed(model, width, torch.zeros(2, in_channels, image_size, image_size))
    factory.fixed_width, factory.__name__ = True, name
    return factory


def torchvision_factory(name):
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in known:
        near = [k for k in known if k.startswith(name[:3])] or known[:8]
        raise UsageError(f"--model torchvision:{name}: not a classification model of torchvision; choose from "
                         f"{', '.join(near)}, ... (torchvision.models.list_models(module=torchvision.models))")

    def make(in_channels, num_classes):
        return adapt_stem(torchvision.models.get_model(name, weights=None, num_classes=num_classes), in_channels)
    return fixed(make, name)


def stem(model):
    """(name, layer) of the model's first convolution, the one that reads the image."""
    return next(((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))


def adapt_stem(model, in_channels):
    """The model with its first convolution taking `in_channels` (grey: 1) instead of 3: each
    output's kernels over the three colours summed into one and shared out over the channels,
    so that pretrained weights (loaded before) still see a grey image as its colour copy."""
    name, conv = stem(model)
    if conv is None or conv.in_channels == in_channels:
        return model
    weight = conv.weight.detach().sum(dim=1, keepdim=True) / in_channels
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups if conv.groups == 1 else in_channels, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(weight.expand_as(new.weight))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent), leaf, new)
    return model


def load_weights(model, path, in_channels):
    """Load the state dict in `path` (a local file; nothing is downloaded) into `model` where the
    shapes agree; returns one line on what was loaded and what was left as initialised (a
    classifier for another number of classes, say)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(f"--weights {path}: cannot load it as a state dict ({first_line(e)})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise UsageError(f"--weights {path}: holds a {type(state).__name__}, not a state dict")
    name, conv = stem(model)
    if conv is not None and f"{name}.weight" in state and state[f"{name}.weight"].shape[1] != conv.in_channels:
        summed = state[f"{name}.weight"].sum(dim=1, keepdim=True) / conv.in_channels  # as adapt_stem does
        state = {**state, f"{name}.weight": summed.expand(-1, conv.in_channels, -1, -1).clone()}
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise UsageError(f"--weights {path}: none of its {len(state)} tensors fits the model")
    model.load_state_dict(matching, strict=False)
    left = [k for k in own if k not in matching]
    return (f"weights: {len(matching)} of the model's {len(own)} tensors from {path}"
            + (f"; left as initialised: {', '.join(left[:4])}{', ...' if len(left) > 4 else ''}" if left else ""))


def batchnorm_line(model):
    """BatchNorm layers whose running statistics follow the batches with a momentum below
    PyTorch's default 0.1 get 0.1, as a line; None where there are none. torchvision's
    MobileNetV3 uses 0.01, set for hundreds of ImageNet epochs: its statistics need about 300
    steps to leave their start, and until then the model in eval mode (validation, which drives
    the tracker; test; export) answers every image alike: a MobileNetV3-small at 32 x 32 scored 10 %
    on validation after 6 epochs while 68 % on its training batches, and 72 % with 0.1."""
    slow = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.momentum is not None and m.momentum < 0.1]
    if not slow:
        return None
    was = ", ".join(f"{momentum:g}" for momentum in sorted({m.momentum for m in slow}))
    for m in slow:
        m.momentum = 0.1
    return (f"BatchNorm momentum {was} raised to PyTorch's default 0.1 in {len(slow)} layers, so that the running "
            "statistics that validation and the exported model use follow a short training run")


def collapse(model, in_channels, image_size):
    """Where the model's spatial convolutions (kernels larger than 1 x 1) first see a 1 x 1 feature
    map (an image too small for the model's own downsampling: only their kernels' centres see
    anything), as a line; None where none does. A 1 x 1 convolution on one position is by design
    (a squeeze-and-excitation block's, on its pooled map)."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, inputs, out, name=name: seen.append((name, inputs[0].shape[-2:])))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, in_channels, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train()
    first = next((i for i, (_, side) in enumerate(seen) if tuple(side) == (1, 1)), None)
    if first is None:
        return None
    return (f"the feature map is 1 x 1 from {seen[first][0]} on ({len(seen) - first} of its {len(seen)} spatial "
            f"convolutions see one position): {image_size} x {image_size} images are small for this model; "
            "--image-size larger, or a model made for small images")
