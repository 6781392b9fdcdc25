"""Perforated NeuroShrink: dendritic optimization of a plain PyTorch CNN with perforatedai.

Phase 1 converts a plain PyTorch CNN (model.py's, or your own with --model) with the
library (`perforate_model`, called `initialize_pai` before 3.2): every conv and linear
layer gets dendrite capacity.
Phase 2 trains it; each epoch's validation accuracy goes to the library's tracker,
which adds a dendrite set when validation stops improving, rolls back sets that do
not help, and ends the run with the best model over all architectures loaded. Every
restructure is logged, and the library draws its own graph at <out>/<name>.png.

    python train_phase2.py                       # digits, offline, seconds on 2 CPU cores
    python train_phase2.py --no-dendrites        # the same loop without the library
    python train_phase2.py --model rescnn        # a BatchNorm residual CNN; or --model my_module:my_factory
    python train_phase2.py --dataset fashion-mnist --width 0.25 --out PAI_fashion
    python train_phase2.py --resume              # continue an interrupted run in PAI/
    python train_phase2.py --evaluate            # reload PAI/model.ts, recompute test accuracy
"""

import argparse
import importlib
import math
import os
import sys
import time
import warnings
from collections import defaultdict
from contextlib import chdir, contextmanager
from importlib.metadata import version

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import data
import dendrites
import precision
import pruning
import wandb_log
from model import MODELS, count_parameters, width_for_params
from recipes import OPTIMIZERS, SCHEDULES, Recipe, step_schedule
from run_folder import Interrupted, RunFolder, UsageError, read_run

DEVICES = ("auto", "cpu", "cuda", "mps")
QUICK = dict(n_train=1024, n_eval=256, epochs=30, patience=1, max_dendrites=1,  # --quick
             timing_seconds=0)  # inference timing: 5 passes per batch size, not 0.3 s
# Settings that define a run: --resume takes them from the run folder.
RUN_SETTINGS = ("dataset", "data_dir", "model", "width", "params", "prune_from", "epochs", "batch_size", "lr",
                "optimizer", "schedule", "precision", "seed", "patience",
                "max_dendrites", "improvement_threshold", "candidate_init", "dendrite_activation", "dropout",
                "teacher", "distill_weight", "temperature", "restart_at", "lr_trace",
                "min_epochs", "no_dendrites", "capacity_test", "quick", "graph_every_epoch", "wandb")


# ---------------------------------------------------------------- settings

def number(kind, low=0, low_allowed=False, below=math.inf):
    """An argparse type: a finite `kind` above `low` (or equal, if `low_allowed`) and below `below`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and (value > low or (low_allowed and value == low))):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number {'>=' if low_allowed else '>'} {low}")
        if value >= below:
            raise argparse.ArgumentTypeError(f"{text!r} must be below {below:g}")
        return value
    return parse


def positive(kind):
    return number(kind)


non_negative = number(float, low_allowed=True)
probability = number(float, low_allowed=True, below=1)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(2, f"error: {message} (see --help)\n")


def get_args_parser():
    p = _Parser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--dataset", default="digits", choices=data.DATASETS)
    p.add_argument("--data-dir", default=None,
                   help=f"folder the dataset is read from (default ./{data.DEFAULT_DATA_DIR}, "
                        "and for fashion-mnist also Debian's dataset-fashion-mnist package)")
    p.add_argument("--model", default="net",
                   help=f"{' or '.join(MODELS)} (model.py), or your own: package.module:factory, a callable "
                        "taking (in_channels, image_size, num_classes, width) and returning an nn.Module")
    p.add_argument("--width", type=positive(float), default=0.125,
                   help="multiplier on the model's widths (net: 32, 64 channels and 128 hidden units "
                        "of the PyTorch MNIST example)")
    p.add_argument("--params", type=positive(int), default=None, metavar="BUDGET",
                   help="plain runs: instead of --width, the width whose model has the parameter count "
                        "nearest BUDGET (within 10%%); with --prune-from, the count to prune down to")
    p.add_argument("--prune-from", default=None, metavar="RUN",
                   help="plain runs: start from the trained model of the finished plain run in RUN, pruned in "
                        "channels and units (torch-pruning, global magnitude) down to --params, then fine-tuned")
    p.add_argument("--epochs", type=positive(int), default=200,
                   help="cap on epochs; the tracker (or early stopping) normally ends the run first")
    p.add_argument("--batch-size", type=positive(int), default=64)
    p.add_argument("--lr", type=positive(float), default=1e-3, help="learning rate (at the start of each schedule)")
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS,
                   help="adam; adadelta (with --lr 1 --schedule step: the library's MNIST example)")
    p.add_argument("--schedule", default="none", choices=SCHEDULES,
                   help="learning-rate schedule, stepped once per epoch (by the library's tracker in dendritic runs, "
                        "which also rebuilds it at every restructure): cosine over --epochs, step (StepLR step 1, "
                        "gamma 0.7), plateau (ReduceLROnPlateau on validation, patience half of --patience)")
    p.add_argument("--precision", default="fp32", choices=precision.PRECISIONS,
                   help="training precision: autocast with fp32 master weights (bf16 on CPUs with AVX512-BF16 "
                        "and on CUDA, fp16 with loss scaling on CUDA); evaluation and export stay fp32")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--threads", type=positive(int), default=None,
                   help="CPU threads for torch (default: torch's choice, one per core; "
                        "on an idle 2-core machine 2 were as fast as 1 or faster at every width measured)")
    p.add_argument("--out", default="PAI",
                   help="run folder: results.json, checkpoints, exported model, the library's files and graph")
    p.add_argument("--patience", type=positive(int), default=5,
                   help="epochs without validation improvement before the tracker adds dendrites "
                        "(plain runs: before early stopping)")
    p.add_argument("--max-dendrites", type=positive(int), default=3, help="most dendrite sets to add")
    p.add_argument("--improvement-threshold", type=non_negative, nargs="+", default=None, metavar="GAIN",
                   help="the library's improvement_threshold: the validation gain that counts as an "
                        "improvement, one per dendrite set added (default: its own, 0.001 0.0001 0)")
    p.add_argument("--candidate-init", type=positive(float), default=None,
                   help="the library's candidate_weight_initialization_multiplier: scale of a new "
                        "dendrite's weights (default: its own, 0.01)")
    p.add_argument("--dendrite-activation", default="sigmoid", choices=dendrites.ACTIVATIONS,
                   help="the library's pai_forward_function, applied to each dendrite's output")
    p.add_argument("--dropout", type=probability, default=None,
                   help="rate of every nn.Dropout in the model (default: the model's own; net: 0.25 and 0.5)")
    p.add_argument("--teacher", default=None, metavar="MODEL_TS",
                   help="distil from this TorchScript model (a run's model.ts, e.g. a wider plain CNN's)")
    p.add_argument("--distill-weight", type=probability, default=0.5,
                   help="with --teacher: the soft targets' share of the loss (0: labels only)")
    p.add_argument("--temperature", type=positive(float), default=4.0,
                   help="with --teacher: the softmax temperature of the soft targets")
    p.add_argument("--min-epochs", type=positive(int), default=1,
                   help="plain runs: train at least this many epochs (to match a dendritic run's budget)")
    p.add_argument("--restart-at", type=positive(int), nargs="+", default=[], metavar="EPOCH",
                   help="plain runs: rebuild the optimizer and schedule after these epochs, as the library does "
                        "at each restructure of the dendritic run this one is a control for")
    p.add_argument("--lr-trace", type=positive(float), nargs="+", default=[], metavar="LR",
                   help="plain runs: the learning rate of epochs 1, 2, ... (the dendritic run's, whose rebuilt "
                        "schedules the library advances); after the last, the schedule goes on from there")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-dendrites", action="store_true",
                      help="plain baseline: the same loop without the library, early stopping on validation")
    mode.add_argument("--capacity-test", action="store_true",
                      help="Phase 1 check: the library's own test, adding a dendrite set every epoch, 3 in all")
    mode.add_argument("--evaluate", action="store_true",
                      help="reload <out>/model.ts and recompute the run's test accuracy")
    mode.add_argument("--resume", action="store_true",
                      help="continue the interrupted run in --out with its own settings")
    p.add_argument("--graph-every-epoch", action="store_true",
                   help="let the library redraw PAI.png after every epoch, as it does by default "
                        "(slow: by default it is drawn after each restructure and at the end)")
    p.add_argument("--graph-at-end", action="store_true",
                   help="draw PAI.png only when the run ends, as the sweeps do: nobody watches a sweep's "
                        "runs, and a draw costs 0.4-0.8 s, more than a quick run's training")
    p.add_argument("--wandb", action="store_true",
                   help="log every epoch, restructure and PAI.png to Weights & Biases (offline into "
                        "<out>/wandb/ unless WANDB_API_KEY is set; never stops the run)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: {n_train} train / {n_eval} val / {n_eval} test samples, patience "
                        "{patience}, {max_dendrites} dendrite set, at most {epochs} epochs".format(**QUICK))
    return p


def parse_args(argv=None):
    """Parsed arguments, plus `given`: the settings named on the command line."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    args.given = set(vars(parser.parse_args(argv)))
    return args


def resolve_settings(args):
    """--quick's settings; the run folder's name as the library's save name."""
    if args.quick:
        args.epochs = min(args.epochs, QUICK["epochs"])
        args.patience, args.max_dendrites = QUICK["patience"], QUICK["max_dendrites"]
    plain_only = [flag for flag, value in (("--params", args.params), ("--prune-from", args.prune_from),
                                            ("--restart-at", args.restart_at), ("--lr-trace", args.lr_trace)) if value]
    if plain_only and not args.no_dendrites:
        raise UsageError(f"{', '.join(plain_only)}: only for plain runs (add --no-dendrites)")
    if args.prune_from and not args.params:
        raise UsageError("--prune-from needs --params: the parameter count to prune down to")
    if args.wandb:
        try:
            import wandb  # noqa: F401  (checked here, before the output folder is touched)
        except ImportError:
            raise UsageError("--wandb needs the wandb package: pip install wandb") from None
    name = os.path.basename(os.path.abspath(args.out))
    if not args.no_dendrites and not all(c.isalnum() or c in "_-." for c in name):
        raise UsageError(f"--out {args.out}: the folder's name may hold only letters, digits, _ - . "
                         "(the library uses it as its save name)")


def load_splits(dataset, data_dir, quick):
    splits = data.load(dataset, data_dir)
    return data.subset(splits, QUICK["n_train"], QUICK["n_eval"]) if quick else splits


def resolve_precision(name, device):
    try:
        return precision.Precision(name, device)
    except ValueError as e:
        raise UsageError(str(e)) from None


def resolve_device(name):
    available = ["cpu"] + [d for d, ok in (("cuda", torch.cuda.is_available()),
                                           ("mps", torch.backends.mps.is_available())) if ok]
    if name == "auto":
        return torch.device(available[-1])
    if name not in available:
        raise UsageError(f"--device {name} is not available here; choose from auto, {', '.join(available)}")
    return torch.device(name)


def first_line(error):
    return f"{type(error).__name__}: " + (str(error).strip().splitlines() or [""])[0]


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


def data_shape(splits):
    return dict(in_channels=splits.in_channels, image_size=splits.image_size, num_classes=splits.num_classes)


def build_model(spec, splits, width, dropout=None):
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


def make_model(args, splits):
    """The model to train: built at --width, or at the width --params asks for (recorded in
    args.width), or with --prune-from a finished plain run's model pruned to --params."""
    if args.prune_from:
        return set_dropout(pruned_model(args, splits), args.dropout, args.prune_from).train()
    if args.params:
        try:
            args.width = width_for_params(model_factory(args.model), args.params, **data_shape(splits))
        except ValueError as e:
            raise UsageError(f"--params {args.params}: {e}") from None
    return build_model(args.model, splits, args.width, args.dropout)


def pruned_model(args, splits):
    """The trained model of the finished plain run in --prune-from, rebuilt as an nn.Module
    from its model.ts weights, then pruned in channels and units to about --params parameters."""
    run_dir = args.prune_from
    run = read_run(run_dir)
    if run is None or run["status"] != "complete" or not run["settings"]["no_dendrites"]:
        raise UsageError(f"--prune-from {run_dir}: not a finished plain run (--no-dendrites) folder")
    settings = run["settings"]
    if (settings["dataset"], settings["quick"]) != (args.dataset, args.quick):
        raise UsageError(f"--prune-from {run_dir}: trained on {settings['dataset']}"
                         + (" --quick" if settings["quick"] else "") + ", not on this data")
    model = build_model(settings["model"], splits, settings["width"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model.load_state_dict(torch.jit.load(os.path.join(run_dir, "model.ts"), map_location="cpu").state_dict())
    try:
        return pruning.prune_to(model, args.params, splits.train[0][:2].cpu())
    except ValueError as e:
        raise UsageError(f"--prune-from {run_dir}: {e}") from None


# ---------------------------------------------------------------- one epoch

def cross_entropy(logits, images, labels):
    return F.cross_entropy(logits, labels)


class Distillation:
    """Knowledge distillation (Hinton et al., 2015): the labels' cross-entropy mixed with the
    KL divergence from the teacher's outputs, both softened by the temperature (the T^2
    factor keeps the soft term's gradients the size of the hard term's)."""

    def __init__(self, teacher, weight, temperature):
        self.teacher, self.weight, self.temperature = teacher, weight, temperature

    def __call__(self, logits, images, labels):
        t = self.temperature
        with torch.no_grad():
            soft_targets = F.softmax(self.teacher(images).float() / t, dim=1)
        soft = F.kl_div(F.log_softmax(logits.float() / t, dim=1), soft_targets, reduction="batchmean") * t * t
        return (1 - self.weight) * F.cross_entropy(logits, labels) + self.weight * soft


def load_teacher(path, splits, device):
    """A TorchScript model (a run's model.ts) that maps the data's images to its classes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            teacher = torch.jit.load(path, map_location=device)
    except Exception as e:
        raise UsageError(f"--teacher {path}: cannot load it as a TorchScript model ({first_line(e)})") from None
    check_on_a_batch(teacher, splits, f"--teacher {path}", device)
    return teacher


def train_one_epoch(model, optimizer, images, labels, batch_size, generator, amp, loss_fn=cross_entropy):
    """One pass over shuffled in-memory batches, in `amp`'s precision, minimising
    loss_fn(logits, images, labels). Returns (mean loss, accuracy %)."""
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    total_loss = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    for start in progress(range(0, len(labels), batch_size)):
        idx = order[start:start + batch_size]
        x, y = images[idx], labels[idx]
        optimizer.zero_grad(set_to_none=True)
        with amp.autocast():
            logits = model(x)
            loss = loss_fn(logits, x, y)
        amp.step(loss, optimizer)
        total_loss += loss.detach() * len(y)  # summed on the device: no sync per batch
        correct += (logits.argmax(1) == y).sum()
    return total_loss.item() / len(labels), 100.0 * correct.item() / len(labels)


def progress(batches, file=None, delay=3.0):
    """A progress bar on a terminal (stderr) once an epoch has run `delay` seconds; nothing
    in a log file or pipe, which keeps one `epoch=` line per epoch."""
    return tqdm(batches, desc="train", unit="batch", leave=False, delay=delay, file=file, disable=None)


@torch.no_grad()
def evaluate(model, images, labels, batch_size=4096):
    """Accuracy % in eval mode, in large batches."""
    model.eval()
    correct = sum((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(labels), batch_size))
    return 100.0 * correct / len(labels)


class EarlyStopping:
    """The plain run's counterpart of dendrites.Tracker, with the same methods: keep the
    best-validation weights; stop after `patience` epochs without a strictly better
    validation accuracy, but not before `min_epochs`. Steps the recipe's schedule once per
    epoch, as the library does. The restart control of a dendritic run: after each epoch in
    `restarts` it has the optimizer and schedule rebuilt, as the library does at a
    restructure, and epoch e trains at the learning rate lr_trace[e - 1], as the dendritic
    run's did (the library advances a rebuilt schedule by steps of its own)."""

    files = ()  # nothing on disk besides the checkpoint's state

    def __init__(self, patience, min_epochs, recipe, restarts=(), lr_trace=()):
        self.patience, self.min_epochs, self.recipe, self.restarts = patience, min_epochs, recipe, set(restarts)
        self.lr_trace = list(lr_trace)
        self.best_acc, self.best_epoch, self.best_state = -1.0, 0, None
        self.drawing_graph, self.scheduler, self.optimizer, self.epochs_scored = False, None, None, 0

    def new_optimizer(self, model):
        self.optimizer, self.scheduler = self.recipe.build(model.parameters())
        self._follow_trace()
        return self.optimizer

    def _follow_trace(self):
        """The next epoch's learning rate from lr_trace, where it has one."""
        if self.epochs_scored < len(self.lr_trace):
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_trace[self.epochs_scored]

    def add_scores(self, model, epoch, train_acc, val_acc, test_acc):
        self.epochs_scored = epoch
        step_schedule(self.scheduler, val_acc)
        self._follow_trace()
        if val_acc > self.best_acc:
            self.best_acc, self.best_epoch = val_acc, epoch
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        complete = epoch - self.best_epoch >= self.patience and epoch >= self.min_epochs
        restart = None
        if epoch in self.restarts and not complete:
            params = count_parameters(model)
            restart = dendrites.Restructure(epoch, "optimizer restarted", "restart control: optimizer and "
                                            "schedule rebuilt, as at the paired dendritic run's restructure",
                                            params, params, 0, val_acc)
        return dendrites.Step(model, restart, complete, self.best_epoch == epoch)

    def count_params(self, model):
        return count_parameters(model)

    def dendrite_sets(self):
        return 0

    def state_dict(self, model):
        return {"model": model.state_dict(),
                "stopper": {"best_acc": self.best_acc, "best_epoch": self.best_epoch, "best_state": self.best_state}}

    def resume(self, model, state):
        model.load_state_dict(state["model"])
        self.best_acc, self.best_epoch, self.best_state = (state["stopper"][k] for k in
                                                           ("best_acc", "best_epoch", "best_state"))
        return model

    def draw_graph(self):
        pass

    def final_model(self, model):
        model.load_state_dict(self.best_state)  # the weights of the epoch validation chose
        return model

    def clean_copy(self, model):
        return model


# ---------------------------------------------------------------- logging and timing

def log(row, restructure):
    """One grep-able `epoch=` line per epoch, and a line of its own for a restructure."""
    print(f"epoch={row['epoch']:<3d} train_loss={row['train_loss']:.4f} train_acc={row['train_acc']:.2f} "
          f"val_acc={row['val_acc']:.2f} test_acc={row['test_acc']:.2f} params={row['params']} "
          f"dendrite_sets={row['dendrite_sets']} seconds={row['seconds']:.2f}", flush=True)
    if restructure:
        e = restructure
        print(f">>> MODEL RESTRUCTURED (Phase 2 triggered) epoch {e.epoch}: {e.kind}: {e.detail} | "
              f"params {e.params_before:,} -> {e.params_after:,} | val_acc {e.val_acc:.2f}", flush=True)


def inference_ms(path, images, batch_sizes=(1, 256), min_seconds=0.3):
    """Median milliseconds per forward pass of the exported model on the CPU, per batch size
    (batches from `images`), after a warm-up; repeated for at least `min_seconds`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(str(path), map_location="cpu").eval()
    times = {}
    with torch.no_grad():
        for size in batch_sizes:
            batch = images[:size].cpu()
            for _ in range(3):
                model(batch)
            samples, start = [], time.perf_counter()
            while time.perf_counter() - start < min_seconds or len(samples) < 5:
                t0 = time.perf_counter()
                model(batch)
                samples.append(time.perf_counter() - t0)
            times[str(size)] = 1000 * sorted(samples)[len(samples) // 2]
    return times


class Clock(defaultdict):
    """Seconds spent per part of the run: `with clock("train"): ...`."""

    def __init__(self):
        super().__init__(float)

    @contextmanager
    def __call__(self, key):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[key] += time.perf_counter() - t0


# ---------------------------------------------------------------- the run's record

def run_settings(args, device, splits, model):
    """What results.json records as the run's settings."""
    return {**{k: v for k, v in vars(args).items() if k != "given"},
            "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "perforatedai": None if args.no_dendrites else version("perforatedai"),
            "data_sizes": splits.sizes(), "layer_widths": getattr(model, "widths", None),
            "plain_params": count_parameters(model)}


def describe(args, device, splits, model, folder):
    widths = getattr(model, "widths", None)
    return (f"data: {args.dataset} {splits.sizes()} on {device}, {torch.get_num_threads()} thread(s); "
            f"model: {args.model}, " + (f"widths {widths}, " if widths else "")
            + f"{count_parameters(model):,} parameters"
            + (f"; resuming after epoch {folder.epochs_done}" if folder.resuming else ""))


def phase1_report(tracker, model, capacity_test):
    modules, params = tracker.dendrite_modules(), tracker.count_params(model)
    print(f"Phase 1: dendrite capacity on {', '.join(modules)}; {params:,} parameters"
          + (" (the library's capacity test)" if capacity_test else ""))
    return {"dendrite_modules": modules, "params": params}


def checkpoint_state(tracker, model, optimizer, generator, amp):
    """What --resume needs besides the library's own files."""
    return {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
            "scheduler": tracker.scheduler.state_dict() if tracker.scheduler else None,
            "generator": generator.get_state(), **tracker.state_dict(model), **amp.state_dict()}


def restore(state, optimizer, scheduler, generator, amp):
    optimizer.load_state_dict(state["optimizer"])
    if scheduler:
        scheduler.load_state_dict(state["scheduler"])
    amp.load_state_dict(state)
    torch.set_rng_state(state["rng"])
    generator.set_state(state["generator"])


def summary(folder, final, params, tracker, complete, clean_difference, inference, clock):
    """The final metrics results.json records; `final` holds the final model's accuracies."""
    history, library = folder.result["history"], isinstance(tracker, dendrites.Tracker)
    return {**final, "best_epoch": max(r["epoch"] for r in history if r["best"]),
            "epochs": len(history), "params": params, "dendrite_sets": tracker.dendrite_sets(),
            "tracker_complete": complete if library else None,
            "clean_model_max_logit_difference": clean_difference, "inference_ms": inference,
            "wall_seconds": folder.elapsed(), "timing_seconds": dict(clock),
            "graph": f"{folder.name}/{folder.name}.png" if library else None}


def report(folder, capacity_test):
    final = folder.result["final"]
    what = "capacity test (library smoke test, not a result)" if capacity_test else "best model"
    print(f"{what}: test_acc={final['test_acc']:.2f} val_acc={final['val_acc']:.2f} (epoch {final['best_epoch']}) "
          f"params={final['params']:,} dendrite_sets={final['dendrite_sets']} epochs={final['epochs']} "
          f"wall={final['wall_seconds']:.1f}s -> {folder.given}/results.json")


# ---------------------------------------------------------------- the run

def main(args):
    """Train as `args` says (see parse_args); returns the result also written to
    <out>/results.json. Raises UsageError / data.DataError / dendrites.LibraryError on bad
    input or a library failure, and Interrupted after saving on SIGINT or SIGTERM."""
    clock, device, folder = Clock(), resolve_device(args.device), RunFolder(args.out)
    if args.evaluate:
        return evaluate_saved(folder, device)
    if args.resume:
        folder.read_settings_for_resume(args, RUN_SETTINGS)
    resolve_settings(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = resolve_precision(args.precision, device)
    with clock("data"):  # data and model before touching --out: bad input leaves it as it was
        splits = load_splits(args.dataset, args.data_dir, args.quick).to(device)
    torch.manual_seed(args.seed)
    model = make_model(args, splits)
    recipe = Recipe(args.optimizer, args.lr, args.schedule, args.epochs, args.patience)
    loss_fn = (Distillation(load_teacher(args.teacher, splits, device), args.distill_weight, args.temperature)
               if args.teacher else cross_entropy)
    folder.open(run_settings(args, device, splits, model))
    wandb = wandb_log.start(folder.result, folder.path) if args.wandb else None  # optional W&B logging
    generator = torch.Generator().manual_seed(args.seed)  # batch order
    print(describe(args, device, splits, model, folder))

    # The library writes to ./<out name>/; guarded() turns its pdb / sys.exit paths into errors.
    with chdir(folder.path.parent), dendrites.guarded():
        with clock("setup"):
            if args.no_dendrites:
                tracker = EarlyStopping(args.patience, args.min_epochs, recipe, args.restart_at, args.lr_trace)
            else:  # Phase 1: dendritic capacity injection on every conv and linear layer
                tracker = dendrites.Tracker(folder.name, args.patience, args.max_dendrites, recipe,
                                            args.capacity_test, args.graph_every_epoch, args.graph_at_end,
                                            improvement_threshold=args.improvement_threshold,
                                            candidate_init=args.candidate_init,
                                            activation=args.dendrite_activation)
                model = tracker.convert(model)
                folder.result["phase1"] = phase1_report(tracker, model, args.capacity_test)
            state = folder.load_snapshot(tracker.files, device) if folder.resuming else None
            model = (tracker.resume(model, state) if state else model).to(device)
            optimizer = tracker.new_optimizer(model)
            if state:
                restore(state, optimizer, tracker.scheduler, generator, amp)
            params, complete = tracker.count_params(model), False

        with folder.stopping_safely(before_stop=tracker.draw_graph):
            for epoch in range(folder.epochs_done + 1, args.epochs + 1):  # Phase 2
                t0 = time.perf_counter()
                with clock("train"):
                    train_loss, train_acc = train_one_epoch(model, optimizer, *splits.train,
                                                            args.batch_size, generator, amp, loss_fn)
                row = dict(epoch=epoch, lr=optimizer.param_groups[0]["lr"], train_loss=train_loss, train_acc=train_acc,
                           train_seconds=time.perf_counter() - t0, params=params,
                           dendrite_sets=tracker.dendrite_sets())
                with clock("evaluate"):
                    row.update(val_acc=evaluate(model, *splits.val), test_acc=evaluate(model, *splits.test))
                with folder.safe_point():  # a signal now waits until this epoch is saved
                    with clock("graph" if tracker.drawing_graph else "tracker"):
                        step = tracker.add_scores(model, epoch, train_acc, row["val_acc"], row["test_acc"])
                    model, complete = step.model, step.complete
                    if step.restructure:
                        params = tracker.count_params(model)
                        if not complete:  # the tracker dropped the old optimizer and schedule
                            optimizer = tracker.new_optimizer(model)
                    row.update(best=step.new_best, graph_drawn=step.drew_graph, seconds=time.perf_counter() - t0)
                    with clock("checkpoint"):
                        folder.save_epoch(row, step.restructure and vars(step.restructure),
                                          checkpoint_state(tracker, model, optimizer, generator, amp), tracker.files)
                    log(row, step.restructure)  # once the epoch is safely on disk
                    if wandb:
                        wandb.epoch(row, step.restructure)
                if complete:
                    break

        with clock("graph"):
            tracker.draw_graph()
        with clock("export"):
            model = tracker.final_model(model)  # the best model over all architectures and epochs
            clean_difference = folder.export(model, tracker.clean_copy(model), splits.val[0])
        with clock("inference timing"):  # of model.ts on the CPU, batch 1 and 256
            inference = inference_ms(folder.path / "model.ts", splits.test[0],
                                     min_seconds=QUICK["timing_seconds"] if args.quick else 0.3)

    with clock("evaluate"):
        final = dict(test_acc=evaluate(model, *splits.test), val_acc=evaluate(model, *splits.val))
    folder.finish(summary(folder, final, params, tracker, complete, clean_difference, inference, clock))
    report(folder, args.capacity_test)
    if wandb:
        graph = folder.result["final"]["graph"]
        wandb.finish(folder.result["final"], graph and folder.path.parent / graph)
    return folder.result


def evaluate_saved(folder, device):
    """Reload the TorchScript model of a finished run and recompute its test accuracy."""
    run = read_run(folder.path)
    if run is None or run["status"] != "complete" or not (folder.path / "model.ts").exists():
        raise UsageError(f"--evaluate: {folder.path} holds no finished run (results.json and model.ts)")
    settings = run["settings"]
    splits = load_splits(settings["dataset"], settings["data_dir"], settings["quick"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(str(folder.path / "model.ts"), map_location=device)
    test_acc = evaluate(model, splits.test[0].to(device), splits.test[1].to(device))
    print(f"evaluate: {folder.path}/model.ts test_acc={test_acc:.2f} (the run reported {run['final']['test_acc']:.2f})")
    return {"test_acc": test_acc, "reported_test_acc": run["final"]["test_acc"]}


def cli(argv=None):
    args = parse_args(argv)
    try:
        main(args)
    except (UsageError, data.DataError, dendrites.LibraryError) as e:
        sys.exit(f"error: {e}")
    except Interrupted as stop:
        sys.exit(128 + stop.signum)


if __name__ == "__main__":
    cli()
