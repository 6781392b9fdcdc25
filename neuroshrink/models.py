"""Building the model a run trains: a built-in CNN of model.py or the user's own factory, at
a width or a parameter budget, checked on a batch shaped like the data; a wide run's model
pruned down to a budget; a teacher to distil from."""

import importlib
import os
import sys

import torch
import torch.nn as nn

from model import MODELS, width_for_params

from .errors import UsageError, first_line
from .export import load_torchscript
from .run_folder import read_run


def data_shape(splits):
    """The arguments a model factory takes from the data."""
    return dict(in_channels=splits.in_channels, image_size=splits.image_size, num_classes=splits.num_classes)


def label(spec):
    """The --model spec as a file or study name can hold it (package.module:factory -> package.module-factory)."""
    return spec.replace(":", "-")


def model_factory(spec):
    """The callable --model names: a built-in name (model.MODELS) or package.module:factory,
    importable from here or the current folder."""
    if spec in MODELS:
        return MODELS[spec]
    if ":" not in spec:
        raise UsageError(f"--model {spec}: unknown model; choose from {', '.join(MODELS)}, "
                         "or give package.module:factory")
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
    return factory


def check_on_a_batch(model, splits, name, device="cpu"):
    """The model must map a batch of the data's images to one logit per class. It is left in
    eval mode (no dropout draw, no BatchNorm update)."""
    batch = torch.zeros(2, splits.in_channels, splits.image_size, splits.image_size, device=device)
    try:
        with torch.no_grad():
            output = model.eval()(batch)
    except Exception as e:
        raise UsageError(f"{name}: its forward pass on a batch of shape {tuple(batch.shape)} "
                         f"raised {first_line(e)}") from None
    expected = (2, splits.num_classes)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise UsageError(f"{name}: it maps a batch of shape {tuple(batch.shape)} to {got}; "
                         f"expected logits of shape {expected}")


def build(spec, splits, width, dropout=None):
    """factory(in_channels, image_size, num_classes, width) for the data, checked on a batch
    shaped like it; `dropout` sets the rate of each of its nn.Dropout layers."""
    factory = model_factory(spec)
    shape = dict(**data_shape(splits), width=width)
    try:
        model = factory(**shape)
    except Exception as e:
        if spec in MODELS and isinstance(e, ValueError):  # a width the built-in model cannot take
            raise UsageError(f"--model {spec}: {e}") from None
        call = f"{factory.__name__}({', '.join(f'{k}={v}' for k, v in shape.items())})"
        raise UsageError(f"--model {spec}: {call} raised {first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model {spec}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    check_on_a_batch(model, splits, f"--model {spec}")
    return set_dropout(model, dropout, spec).train()


def set_dropout(model, rate, name):
    if rate is not None:
        layers = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        if not layers:
            raise UsageError(f"--dropout: the model {name} has no nn.Dropout layer")
        for layer in layers:
            layer.p = rate
    return model


def width_for_budget(spec, budget, splits):
    """The width at which the model has about `budget` parameters (within 10 %)."""
    try:
        return width_for_params(model_factory(spec), budget, **data_shape(splits))
    except ValueError as e:
        raise UsageError(f"--params {budget}: {e}") from None


def pruned_from_run(run_dir, budget, splits, dataset, quick, importance="magnitude"):
    """The trained model of the finished plain run in `run_dir`, rebuilt as an nn.Module from
    its model.ts weights, then pruned in channels and units to about `budget` parameters."""
    run = read_run(run_dir)
    if run is None or run["status"] != "complete" or not run["settings"]["no_dendrites"]:
        raise UsageError(f"--prune-from {run_dir}: not a finished plain run (--no-dendrites) folder")
    settings = run["settings"]
    if (settings["dataset"], settings["quick"]) != (dataset, quick):
        raise UsageError(f"--prune-from {run_dir}: trained on {settings['dataset']}"
                         + (" --quick" if settings["quick"] else "") + ", not on this data")
    model = build(settings["model"], splits, settings["width"])
    model.load_state_dict(load_torchscript(os.path.join(run_dir, "model.ts")).state_dict())
    from . import pruning  # torch-pruning is needed for --prune-from only
    try:
        return pruning.prune_to(model, budget, splits.train[0][:2].cpu(), importance)
    except ValueError as e:
        raise UsageError(f"--prune-from {run_dir}: {e}") from None


def load_teacher(path, splits, device):
    """A TorchScript model (a run's model.ts) that maps the data's images to its classes."""
    try:
        teacher = load_torchscript(path, device)
    except Exception as e:
        raise UsageError(f"--teacher {path}: cannot load it as a TorchScript model ({first_line(e)})") from None
    check_on_a_batch(teacher, splits, f"--teacher {path}", device)
    return teacher
