"""From a run's config to what it trains: the device and precision, the data, the model (a
built-in CNN of model.py or the user's own factory, at a width or a parameter budget, checked
on a batch shaped like the data; or a wide run's model pruned down to a budget), the loss (with
a teacher to distil from) and the tracker that drives Phase 2."""

import copy
import os
import shutil
from pathlib import Path

import torch
import torch.nn as nn

from model import MODELS, width_for_params

from . import allocator, data, images, models, placement, precision
from .config import QUICK
from .errors import UsageError, first_line
from .export import load_torchscript
from .recipes import Recipe
from .run_folder import read_run
from .stopping import EarlyStopping
from .training import CrossEntropy, Distillation


def device_named(name):
    available = ["cpu"] + [d for d, ok in (("cuda", torch.cuda.is_available()),
                                           ("mps", torch.backends.mps.is_available())) if ok]
    if name == "auto":
        return torch.device(available[-1])
    if name not in available:
        raise UsageError(f"--device {name} is not available here; choose from auto, {', '.join(available)}")
    return torch.device(name)


def hardware(config):
    """The run's device; its threads set; the allocator set for training (allocator.py); a
    precision the device lacks refused."""
    allocator.keep_freed_memory()
    if config.threads:
        torch.set_num_threads(config.threads)
    chosen = device_named(config.device)
    if config.precision not in ("auto", *precision.available(chosen)):
        raise UsageError(f"--precision {config.precision} is not available on {chosen.type} here; "
                         f"choose from auto, {', '.join(precision.available(chosen))}")
    return chosen


# --precision auto's measurements in this process, by architecture: a study's worker trains many
# runs of one architecture, and one measurement answers for all of them (issue 47).
MEASURED_PRECISIONS = {}


def training_precision(config, device, model, splits, before=None):
    """(Precision, what the record says of it). auto measures one training step of this model
    in each precision the device has, unless `before` (a resumed run's record) has chosen or
    this process measured the same architecture already (said in the record: measured_before)."""
    if config.precision != "auto":
        return precision.Precision(config.precision, device), {"chosen": config.precision}
    chosen = before
    if chosen is None:
        architecture = (device.type, config.batch_size, config.channels_last, config.quick,
                        tuple(splits.train[0].shape[1:]), tuple(tuple(p.shape) for p in model.parameters()))
        if architecture in MEASURED_PRECISIONS:
            chosen = MEASURED_PRECISIONS[architecture] | {"measured_before": True}
        else:
            batch = splits.normalise(splits.train[0][:config.batch_size])
            times = precision.measure(model, batch, splits.train[1], device, config.batch_size,
                                      seconds=0 if config.quick else 0.5)
            chosen = MEASURED_PRECISIONS[architecture] = {"chosen": precision.choose(times), "ms_per_step": times}
        print(f"precision auto: {chosen['chosen']} (ms per training step: "
              + ", ".join(f"{k} {v:.2f}" for k, v in chosen["ms_per_step"].items())
              + ("; measured by an earlier run of this architecture in this process" if "measured_before" in chosen
                 else "") + ")")
    return precision.Precision(chosen["chosen"], device), chosen


def compiled(model, device):
    """The model's training forward compiled by torch.compile, or the model itself where the
    compiler it needs is missing (Inductor builds C++ kernels on the CPU), said in one line.
    Its parameters are the model's: evaluation, checkpoints and export use the model."""
    if device.type == "cpu" and not any(shutil.which(name) for name in (os.environ.get("CXX") or "g++", "clang++")):
        print("compile: no C++ compiler found (g++, clang++ or $CXX); training eagerly")
        return model
    return torch.compile(model)


def splits_of(settings):
    """The data set's splits as a run (its config or recorded settings) trains on: with quick
    the first few of each, with train_images the first N training images (a reduced-budget
    search) and every validation and test image."""
    get = settings.get if isinstance(settings, dict) else lambda key: getattr(settings, key)
    splits = data.load(get("dataset"), get("data_dir"), get("image_size"), reading_of(settings))
    splits = data.subset(splits, QUICK["n_train"], QUICK["n_eval"]) if get("quick") else splits
    return data.subset(splits, get("train_images"), None) if get("train_images") else splits


def reading_of(settings):
    """How a run (its config, recorded settings or a sweep's options) reads image files; a record
    made before these settings existed: the defaults."""
    get = settings.get if isinstance(settings, dict) else lambda key: getattr(settings, key, None)
    return images.Reading(get("max_megapixels") or images.MAX_MEGAPIXELS, get("pixel_range"))


def model_of(config, splits):
    """(model, its width): built at the width, or at the width the params budget asks for, or
    with prune_from a finished plain run's model pruned to the budget."""
    if config.prune_from:
        model = pruned_from_run(config.prune_from, config.params, splits, config.dataset, config.quick,
                                config.prune_importance)
        say(models.batchnorm_line(model))
        return set_dropout(model, config.dropout, config.prune_from).train(), config.width
    width = (width_for_budget(config.model, config.params, splits, config.placement, config.head_units)
             if config.params else config.width)
    if config.weights and width < 1 and fixed_width(config.model):
        raise UsageError(f"--weights: at width {width:g} the model is narrowed and re-initialised; pretrained weights "
                         "are for the model as it is (width 1)")
    model = build(config.model, splits, width, config.dropout)
    say(fixed_width(config.model) and width < 1 and models.narrow_line(width),
        models.stem_line(config.model, model, splits.in_channels),
        config.weights and models.load_weights(model, config.weights, splits.in_channels),
        models.collapse(model, splits.in_channels, splits.image_size), models.batchnorm_line(model))
    if config.placement == "head":  # part of the architecture: a plain run gets the layer too
        model = placement.add_head(model, splits.in_channels, splits.image_size, config.head_units,
                                   f"--model {config.model_name()}")
    return model, width


def say(*lines):
    """What building the model changed or found, a line each (None and False: nothing to say)."""
    for line in filter(None, lines):
        print(f"model: {line}")


def loss_of(config, splits, device):
    """Cross-entropy on the labels, or with a teacher distillation from its outputs too."""
    if not config.teacher:
        return CrossEntropy(config.label_smoothing)
    return Distillation(load_teacher(config.teacher, splits, device), config.distill_weight, config.temperature,
                        config.label_smoothing)


def tracker_of(config, save_name, model):
    """What drives Phase 2: the library's tracker (dendrites where config.placement puts them on
    `model`), or for a plain run early stopping."""
    recipe = Recipe.of(config)
    if config.no_dendrites:
        return EarlyStopping(config.patience, config.min_epochs, recipe, config.restart_at, config.lr_trace,
                             config.restructure_lr)
    if not all(c.isalnum() or c in "_-." for c in save_name):
        raise UsageError(f"--out: the run folder's name {save_name!r} may hold only letters, digits, _ - . "
                         "(the library uses it as its save name)")
    from . import dendrites  # perforatedai: only dendritic runs load it
    return dendrites.PerforatedTracker(
        save_name, config.patience, config.max_dendrites, recipe, config.capacity_test, config.graph_every_epoch,
        config.graph_at_end, switch_every=config.schedule_epochs if config.switch == "fixed" else None,
        improvement_threshold=config.improvement_threshold, candidate_init=config.candidate_init,
        activation=config.dendrite_activation, placed=placement.place(model, config.placement),
        restructure_lr=config.restructure_lr, graph=not config.no_export)


def data_shape(splits):
    """The arguments a model factory takes from the data."""
    return dict(in_channels=splits.in_channels, image_size=splits.image_size, num_classes=splits.num_classes)


def fixed_width(spec):
    """Whether the model has widths of its own (no width multiplier; models.py)."""
    return getattr(model_factory(spec), "fixed_width", False)


def label(spec):
    """The --model spec as a file or study name can hold it (package.module:factory -> package.module-factory)."""
    return models.name_of(spec).replace(":", "-")


def model_factory(spec):
    """The factory --model names (neuroshrink/models.py)."""
    return models.factory_of(spec)


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


def dropout_layers(model):
    """The model's nn.Dropout layers: what --dropout sets, and what a search tunes where there are any."""
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


def set_dropout(model, rate, name):
    if rate is not None:
        layers = dropout_layers(model)
        if not layers:
            raise UsageError(f"--dropout: the model {name} has no nn.Dropout layer")
        for layer in layers:
            layer.p = rate
    return model


def factory_of(spec, where="all", head_units=None):
    """The model's factory; with placement head, its models have the added layer before the
    classifier (the budget counts it)."""
    factory = model_factory(spec)
    if where != "head":
        return factory

    def with_head(**shape):
        return placement.add_head(factory(**shape), shape["in_channels"], shape["image_size"], head_units,
                                  f"--model {label(spec)}")
    return with_head


def width_for_budget(spec, budget, splits, where="all", head_units=None):
    """The width at which the model (with placement head, its added layer included) has about
    `budget` parameters (within 10 %); for a model of fixed widths, the fraction of its channels
    kept (models.py)."""
    try:
        return width_for_params(factory_of(spec, where, head_units), budget, bisect=fixed_width(spec),
                                **data_shape(splits))
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
    weights = Path(run_dir, "model.ts").resolve()
    key = (str(weights), weights.stat().st_mtime_ns, importance, tuple(data_shape(splits).values()))
    if key not in _PRUNINGS or not _PRUNINGS[key].reaches(budget):
        model = build(settings["model"], splits, settings["width"])
        model.load_state_dict(load_torchscript(weights).state_dict())
        from . import pruning  # torch-pruning is needed for --prune-from only
        _PRUNINGS.pop(key, None)  # (one pruned past this budget: from the start again)
        while len(_PRUNINGS) >= 4:
            del _PRUNINGS[next(iter(_PRUNINGS))]
        _PRUNINGS[key] = pruning.Pruning(model, splits.normalise(splits.train[0][:2].cpu()), importance)
    try:
        return _PRUNINGS[key].to(budget)  # a copy of its own
    except ValueError as e:
        raise UsageError(f"--prune-from {run_dir}: {e}") from None


# (model.ts as it is, importance, data shape): its pruning so far, kept for the process. A study's search
# trials all prune one wide model to a budget, and its budgets come largest first (pruning.Pruning).
_PRUNINGS = {}


def load_teacher(path, splits, device):
    """A TorchScript model (a run's model.ts) that maps the data's images to its classes."""
    try:
        teacher = load_torchscript(path, device)
    except Exception as e:
        raise UsageError(f"--teacher {path}: cannot load it as a TorchScript model ({first_line(e)})") from None
    check_on_a_batch(teacher, splits, f"--teacher {path}", device)
    return teacher
