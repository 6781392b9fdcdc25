"""Perforated NeuroShrink: dendritic optimization of a plain PyTorch CNN with perforatedai.

Phase 1 converts a plain PyTorch CNN (model.py's, or your own with --model) with the
library (`perforate_model`, called `initialize_pai` before 3.2): every conv and linear
layer gets dendrite capacity.
Phase 2 trains it; each epoch's validation accuracy goes to the library's tracker,
which adds a dendrite set when validation stops improving, rolls back sets that do not
help, and ends the run with the best model over all architectures loaded. Every
restructure is logged, and the library draws its own graph at <out>/<name>.png.

    python train_phase2.py                       # digits, offline, seconds on 2 CPU cores
    python train_phase2.py --no-dendrites        # the same loop without the library
    python train_phase2.py --model rescnn        # a BatchNorm residual CNN; or --model my_module:my_factory
    python train_phase2.py --dataset fashion-mnist --width 0.25 --out PAI_fashion
    python train_phase2.py --dataset fashion-mnist --model compact --params 75000 --no-dendrites --recipe strong
    python train_phase2.py --resume              # continue an interrupted run in PAI/
    python train_phase2.py --evaluate            # reload PAI/model.ts, recompute test accuracy
    python train_phase2.py --evaluate --quantize int8   # int8 ONNX model of the finished run in PAI/
"""

import argparse
import os
import sys
import time
from collections import defaultdict
from contextlib import chdir
from importlib.metadata import version

import torch

from model import MODELS, count_parameters
from neuroshrink import augment, data, export, machine, models, precision, recipes, wandb_log
from neuroshrink.errors import NeuroShrinkError, UsageError
from neuroshrink.flags import Parser, non_negative, number, positive, probability
from neuroshrink.recipes import AUGMENTS, OPTIMIZERS, RECIPES, SCHEDULES, Recipe
from neuroshrink.run_folder import Interrupted, RunFolder, read_run
from neuroshrink.stopping import EarlyStopping
from neuroshrink.training import CrossEntropy, Distillation, evaluate, train_one_epoch

DEVICES = ("auto", "cpu", "cuda", "mps")
SWITCHES = ("history", "fixed")
ACTIVATIONS = ("sigmoid", "relu", "tanh")  # the library's pai_forward_function (dendrites.ACTIVATIONS)
QUICK = dict(n_train=1024, n_eval=256, epochs=30, patience=1, max_dendrites=1,  # --quick
             timing_seconds=0)  # inference timing: 5 passes per batch size, not 0.3 s
# Settings that define a run: --resume takes them from the run folder, and a sweep finding a
# run folder continues the run there only if they all agree.
RUN_SETTINGS = ("dataset", "data_dir", "image_size", "model", "width", "params", "prune_from", "epochs", "batch_size", "lr",
                "optimizer", "schedule", "precision", "seed", "patience", "recipe", "weight_decay", "warmup",
                "label_smoothing", "augment", "schedule_epochs", "channels_last", "switch", "train_images",
                "prune_importance", "max_dendrites", "improvement_threshold", "candidate_init", "dendrite_activation",
                "dropout",
                "teacher", "distill_weight", "temperature", "restart_at", "lr_trace",
                "min_epochs", "no_dendrites", "capacity_test", "quick", "graph_every_epoch", "wandb", "quantize")
# What the settings added with --recipe were before it: a run recorded earlier was trained so.
BEFORE_RECIPES = {"recipe": "default", "weight_decay": 0.0, "warmup": 0, "label_smoothing": 0.0, "augment": "none",
                  "channels_last": False, "switch": "history", "train_images": None,
                  "prune_importance": "magnitude"}


def settings_of(run):
    """A recorded run's settings, with those added since it was recorded as it was trained."""
    settings = {**BEFORE_RECIPES, **run["settings"]}
    settings.setdefault("schedule_epochs", settings["epochs"])  # the cosine schedule spanned the cap
    return settings


# ---------------------------------------------------------------- settings

def get_args_parser():
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits", type=data.source, metavar="DATASET",
                   help=f"{', '.join(data.DATASETS)}; or your own images: folder:PATH (a folder per class, "
                        "optionally under train/ val/ test/) or npz:PATH (arrays x, y, optionally x_test, y_test)")
    p.add_argument("--data-dir", default=None,
                   help=f"folder the dataset is read from (default ./{data.DEFAULT_DATA_DIR}, "
                        "and for fashion-mnist also Debian's dataset-fashion-mnist package); for your own "
                        "images, where their cache is kept")
    p.add_argument("--image-size", type=positive(int), default=None, metavar="S",
                   help="your own images: resize every image to S x S (default: the files' size, when they "
                        "all have the same square size)")
    p.add_argument("--model", default="net",
                   help=f"{' or '.join(MODELS)} (model.py), or your own: package.module:factory, a callable "
                        "taking (in_channels, image_size, num_classes, width) and returning an nn.Module")
    p.add_argument("--width", type=positive(float), default=0.125,
                   help="multiplier on the model's widths (net: 32, 64 channels and 128 hidden units "
                        "of the PyTorch MNIST example)")
    p.add_argument("--recipe", default="default", choices=RECIPES,
                   help="defaults of the training flags below: default (Adam 1e-3, batch 64, no schedule, early "
                        "stopping); strong (AdamW 3e-3 with weight decay 0.05, batch 256, 2 warm-up epochs then "
                        "cosine over 30 epochs, label smoothing 0.1, shifts and, where the data allow, flips; plain "
                        "runs train all 30 epochs, dendritic runs add dendrites as each schedule ends; on digits "
                        "batch 32 and no augmentation). A flag given overrides its recipe's value")
    p.add_argument("--epochs", type=positive(int), default=200,
                   help="cap on epochs; the tracker (or early stopping) normally ends the run first "
                        "(--recipe strong: plain runs train exactly --epochs, 30 unless given)")
    p.add_argument("--batch-size", type=positive(int), default=64)
    p.add_argument("--lr", type=positive(float), default=1e-3, help="learning rate (at the start of each schedule)")
    p.add_argument("--optimizer", default="adam", choices=OPTIMIZERS,
                   help="adam; adamw (decoupled weight decay); adadelta (with --lr 1 --schedule step: the library's "
                        "MNIST example)")
    p.add_argument("--weight-decay", type=non_negative, default=0.0, help="the optimizer's weight decay")
    p.add_argument("--schedule", default="none", choices=SCHEDULES,
                   help="learning-rate schedule, stepped once per epoch (by the library's tracker in dendritic runs, "
                        "which also rebuilds it at every restructure): cosine over --schedule-epochs, step (StepLR "
                        "step 1, gamma 0.7), plateau (ReduceLROnPlateau on validation, patience half of --patience)")
    p.add_argument("--schedule-epochs", type=positive(int), default=None, metavar="N",
                   help="length of one cosine schedule (default: --epochs; --recipe strong: 30); a dendritic run "
                        "starts a new one at every restructure")
    p.add_argument("--warmup", type=number(int, low_allowed=True), default=0, metavar="EPOCHS",
                   help="with --schedule cosine: epochs of linear warm-up to --lr before the cosine")
    p.add_argument("--label-smoothing", type=probability, default=0.0,
                   help="share of each target spread evenly over the classes")
    p.add_argument("--augment", default="none", choices=AUGMENTS,
                   help="training batches shifted by up to 2 pixels (shift), and half of them mirrored "
                        "(shift-flip); auto: shift-flip where the data allow flips (fashion-mnist, cifar10), "
                        "else shift")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                   help="keep the model's tensors in channels-last (NHWC) memory order, which oneDNN's CPU "
                        "convolutions run faster (an epoch of the compact CNN: 8%% less time here)")
    p.add_argument("--precision", default="fp32", choices=precision.CHOICES,
                   help="training precision: autocast with fp32 master weights (bf16 on CPUs with AVX512-BF16 "
                        "and on CUDA, fp16 with loss scaling on CUDA); auto: the fastest measured on this device "
                        "for this model, fp32 unless another is at least 10%% faster; evaluation and export stay fp32")
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
    p.add_argument("--switch", default="history", choices=SWITCHES,
                   help="when the tracker adds dendrites: history (once validation has not improved for --patience "
                        "epochs; the library's default) or fixed (every --schedule-epochs epochs, as each schedule "
                        "ends; --recipe strong's)")
    p.add_argument("--max-dendrites", type=positive(int), default=3, help="most dendrite sets to add")
    p.add_argument("--improvement-threshold", type=non_negative, nargs="+", default=None, metavar="GAIN",
                   help="the library's improvement_threshold: the validation gain that counts as an "
                        "improvement, one per dendrite set added (default: its own, 0.001 0.0001 0)")
    p.add_argument("--candidate-init", type=positive(float), default=None,
                   help="the library's candidate_weight_initialization_multiplier: scale of a new "
                        "dendrite's weights (default: its own, 0.01)")
    p.add_argument("--dendrite-activation", default="sigmoid", choices=ACTIVATIONS,
                   help="the library's pai_forward_function, applied to each dendrite's output")
    p.add_argument("--dropout", type=probability, default=None,
                   help="rate of every nn.Dropout in the model (default: the model's own; net: 0.25 and 0.5)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-dendrites", action="store_true",
                      help="plain baseline: the same loop without the library, early stopping on validation")
    mode.add_argument("--capacity-test", action="store_true",
                      help="Phase 1 check: the library's own test, adding a dendrite set every epoch, 3 in all")
    mode.add_argument("--evaluate", action="store_true",
                      help="reload <out>/model.ts and recompute the run's test accuracy (with --quantize: "
                           "quantize the finished run, no training)")
    mode.add_argument("--resume", action="store_true",
                      help="continue the interrupted run in --out with its own settings")
    p.add_argument("--graph-every-epoch", action="store_true",
                   help="let the library redraw PAI.png after every epoch, as it does by default "
                        "(slow: by default it is drawn after each restructure and at the end)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="also write model.int8.onnx: ONNX Runtime's static int8 quantization (QDQ, per-channel "
                        "weights) calibrated on training images; its test accuracy, bytes and latency are recorded")
    p.add_argument("--wandb", action="store_true",
                   help="log every epoch, restructure and PAI.png to Weights & Biases (offline into "
                        "<out>/wandb/ unless WANDB_API_KEY is set; never stops the run)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: {n_train} train / {n_eval} val / {n_eval} test samples, patience "
                        "{patience}, {max_dendrites} dendrite set, at most {epochs} epochs".format(**QUICK))

    x = p.add_argument_group("experiments", "what experiments/ sets for the runs it compares (plain runs)")
    x.add_argument("--params", type=positive(int), default=None, metavar="BUDGET",
                   help="instead of --width, the width whose model has the parameter count nearest BUDGET "
                        "(within 10%%); with --prune-from, the count to prune down to")
    x.add_argument("--prune-from", default=None, metavar="RUN",
                   help="start from the trained model of the finished plain run in RUN, pruned in channels "
                        "and units (torch-pruning, global magnitude) down to --params, then fine-tuned")
    x.add_argument("--prune-importance", default="magnitude", choices=("magnitude", "lamp"),
                   help="with --prune-from: how channels are ranked across layers: magnitude (their weights' L2 "
                        "norm) or lamp (layer-adaptive magnitude, comparable across layers after weight decay "
                        "and BatchNorm)")
    x.add_argument("--teacher", default=None, metavar="MODEL_TS",
                   help="distil from this TorchScript model (a run's model.ts, e.g. a wider plain CNN's)")
    x.add_argument("--distill-weight", type=probability, default=0.5,
                   help="with --teacher: the soft targets' share of the loss (0: labels only)")
    x.add_argument("--temperature", type=positive(float), default=4.0,
                   help="with --teacher: the softmax temperature of the soft targets")
    x.add_argument("--train-images", type=positive(int), default=None, metavar="N",
                   help="train on the first N training images only (a search on a reduced budget); validation "
                        "and test stay whole")
    x.add_argument("--min-epochs", type=positive(int), default=1,
                   help="train at least this many epochs (to match a dendritic run's budget)")
    x.add_argument("--restart-at", type=positive(int), nargs="+", default=[], metavar="EPOCH",
                   help="rebuild the optimizer and schedule after these epochs, as the library does "
                        "at each restructure of the dendritic run this one is a control for")
    x.add_argument("--lr-trace", type=positive(float), nargs="+", default=[], metavar="LR",
                   help="the learning rate of epochs 1, 2, ... (the dendritic run's, whose rebuilt "
                        "schedules the library advances); after the last, the schedule goes on from there")
    x.add_argument("--graph-at-end", action="store_true",
                   help="dendritic runs: draw PAI.png only when the run ends, as the sweeps do: nobody watches "
                        "a sweep's runs, and a draw costs 0.4-0.8 s, more than a quick run's training")
    return p


def parse_args(argv=None):
    """Parsed arguments, plus `given`: the settings named on the command line."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    args.given = set(vars(parser.parse_args(argv)))
    return args


def apply_recipe(args):
    """The recipe's values of the flags not given. --recipe strong trains plain runs for a
    fixed budget (no early stopping); dendritic runs keep the epoch cap, the library adds
    dendrites as each 30-epoch schedule ends (--switch fixed) and starts a new one."""
    defaults = recipes.defaults(args.recipe, data.label(args.dataset))
    if args.recipe == "strong":
        cycle = defaults.pop("epochs")
        if args.no_dendrites:  # one schedule over the whole budget
            defaults["epochs"] = args.schedule_epochs if "schedule_epochs" in args.given else cycle
            defaults["schedule_epochs"] = args.epochs if "epochs" in args.given else cycle
        else:  # the epoch cap stays; a schedule per architecture
            defaults["schedule_epochs"] = cycle
    for key, value in defaults.items():
        if key not in args.given:
            setattr(args, key, value)
    if args.recipe == "strong" and args.no_dendrites and "min_epochs" not in args.given:
        args.min_epochs = args.epochs  # the fixed budget: the model of the epoch validation chose
    args.augment = augment.resolve(args.augment, data.label(args.dataset))


def resolve_settings(args):
    """The recipe's and --quick's settings, applied to `args`; flags that do not go together
    are refused."""
    if not args.resume:  # a resumed run's settings are already resolved
        apply_recipe(args)
    if args.quick:
        args.epochs = min(args.epochs, QUICK["epochs"])
        args.patience, args.max_dendrites = QUICK["patience"], QUICK["max_dendrites"]
        args.min_epochs = min(args.min_epochs, args.epochs)
    args.schedule_epochs = args.schedule_epochs or args.epochs
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
    return args


def resolve_device(name):
    available = ["cpu"] + [d for d, ok in (("cuda", torch.cuda.is_available()),
                                           ("mps", torch.backends.mps.is_available())) if ok]
    if name == "auto":
        return torch.device(available[-1])
    if name not in available:
        raise UsageError(f"--device {name} is not available here; choose from auto, {', '.join(available)}")
    return torch.device(name)


def resolve_hardware(args):
    """The run's device; --threads applied; a precision the device lacks refused."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.precision not in ("auto", *precision.available(device)):
        raise UsageError(f"--precision {args.precision} is not available on {device.type} here; "
                         f"choose from auto, {', '.join(precision.available(device))}")
    return device


def resolve_precision(args, device, model, splits, folder):
    """The training precision; --precision auto measures one training step of this model in
    each precision the device has (or takes the resumed run's choice) and records it."""
    name = args.precision
    if name == "auto":
        chosen = (folder.result or {}).get("precision")  # a resumed run keeps its choice
        if chosen is None:
            times = precision.measure(model, *splits.train, device, args.batch_size)
            chosen = {"chosen": precision.choose(times), "ms_per_step": times}
            print(f"precision auto: {chosen['chosen']} (ms per training step: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in times.items()) + ")")
        name = chosen["chosen"]
    else:
        chosen = {"chosen": name}
    return precision.Precision(name, device), chosen


def load_splits(dataset, data_dir, quick, image_size=None, train_images=None):
    """The data set's splits; with --quick the first few of each, with --train-images the first
    N training images (a reduced-budget search) and every validation and test image."""
    splits = data.load(dataset, data_dir, image_size)
    splits = data.subset(splits, QUICK["n_train"], QUICK["n_eval"]) if quick else splits
    return data.subset(splits, train_images, None) if train_images else splits


def make_model(args, splits):
    """The model to train: built at --width, or at the width --params asks for (recorded in
    args.width), or with --prune-from a finished plain run's model pruned to --params."""
    if args.prune_from:
        model = models.pruned_from_run(args.prune_from, args.params, splits, args.dataset, args.quick,
                                       args.prune_importance)
        return models.set_dropout(model, args.dropout, args.prune_from).train()
    if args.params:
        args.width = models.width_for_budget(args.model, args.params, splits)
    return models.build(args.model, splits, args.width, args.dropout)


def make_loss(args, splits, device):
    """Cross-entropy on the labels, or with --teacher distillation from its outputs too."""
    if not args.teacher:
        return CrossEntropy(args.label_smoothing)
    return Distillation(models.load_teacher(args.teacher, splits, device), args.distill_weight, args.temperature,
                        args.label_smoothing)


def make_tracker(args, save_name):
    """What drives Phase 2: the library's tracker, or for a plain run early stopping."""
    recipe = Recipe(args.optimizer, args.lr, args.schedule, args.schedule_epochs, args.patience, args.weight_decay,
                    args.warmup)
    if args.no_dendrites:
        return EarlyStopping(args.patience, args.min_epochs, recipe, args.restart_at, args.lr_trace)
    from neuroshrink import dendrites  # perforatedai: only dendritic runs load it
    return dendrites.Tracker(save_name, args.patience, args.max_dendrites, recipe, args.capacity_test,
                             args.graph_every_epoch, args.graph_at_end,
                             switch_every=args.schedule_epochs if args.switch == "fixed" else None,
                             improvement_threshold=args.improvement_threshold, candidate_init=args.candidate_init,
                             activation=args.dendrite_activation)


# ---------------------------------------------------------------- the run

def main(args):
    """Train as `args` says (see parse_args); returns the result also written to
    <out>/results.json. Raises a NeuroShrinkError (UsageError, DataError, LibraryError) on bad
    input or a library failure, and Interrupted after saving on SIGINT or SIGTERM."""
    folder, clock = RunFolder(args.out), Clock()
    if args.evaluate:
        return evaluate_saved(folder, resolve_device(args.device), args.quantize)
    if args.resume:
        folder.read_settings_for_resume(args, RUN_SETTINGS)
    device = resolve_hardware(resolve_settings(args))
    # Data and model before --out is touched: bad input leaves it as it was.
    splits = load_splits(args.dataset, args.data_dir, args.quick, args.image_size, args.train_images).to(device)
    torch.manual_seed(args.seed)
    model, loss_fn = make_model(args, splits), make_loss(args, splits, device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp, chosen = resolve_precision(args, device, model, splits, folder)
    tracker = make_tracker(args, folder.name)
    folder.open(run_settings(args, device, splits, model))
    folder.result["precision"] = chosen
    generator = torch.Generator().manual_seed(args.seed)  # batch order and augmentation
    augmentation = augment.Augment.named(args.augment)
    print(describe(args, device, splits, model, folder))
    clock.lap("data")

    # The library writes into ./<out name>/; guarded(): its pdb and sys.exit(0) paths raise.
    with chdir(folder.path.parent), tracker.guarded():
        model = tracker.convert(model)  # Phase 1: dendrite capacity on every conv and linear layer
        report_phase1(folder, tracker, model, args.capacity_test)
        state = folder.load_snapshot(tracker.files, device) if folder.resuming else None
        model = (tracker.resume(model, state) if state else model).to(device)
        optimizer = tracker.new_optimizer(model)
        if state:
            restore(state, optimizer, tracker.scheduler, generator, amp)
        clock.lap("setup")

        journal, step = Journal(folder, clock, args.wandb), None
        with folder.stopping_safely(before_stop=tracker.draw_graph):
            for epoch in range(folder.epochs_done + 1, args.epochs + 1):  # Phase 2
                row = journal.new_row(epoch, optimizer, tracker, model)
                row["train_loss"], row["train_acc"] = train_one_epoch(model, optimizer, *splits.train, args.batch_size,
                                                                      generator, amp, loss_fn, augmentation)
                row["train_seconds"] = clock.lap("train")
                row.update(val_acc=evaluate(model, *splits.val), test_acc=evaluate(model, *splits.test))
                clock.lap("evaluate")
                with folder.safe_point():  # a signal now waits until this epoch is saved
                    step = tracker.add_scores(model, epoch, row["train_acc"], row["val_acc"], row["test_acc"])
                    model = step.model
                    if step.restructure and not step.complete:  # the tracker dropped the optimizer and schedule
                        optimizer = tracker.new_optimizer(model)
                    journal.epoch(row, step, checkpoint_state(tracker, model, optimizer, generator, amp), tracker)
                if step.complete:
                    break

        tracker.draw_graph()
        clock.lap("graph")
        model = tracker.final_model(model)  # the best model over all architectures and epochs
        exported = export_model(folder, model, tracker, splits, args, clock)

    final = dict(test_acc=evaluate(model, *splits.test), val_acc=evaluate(model, *splits.val))
    journal.finish(summary(folder, final | exported, model, tracker, step, not args.no_dendrites, clock),
                   args.capacity_test)
    return folder.result


def export_model(folder, model, tracker, splits, args, clock):
    """model.ts and model_clean.pt in the run folder, then model.onnx (and with --quantize
    model.int8.onnx), each checked, with what it costs to run on the CPU."""
    difference = export.export(folder.path, model, tracker.clean_copy(model), splits.val[0], splits.classes)
    clock.lap("export")
    min_seconds = QUICK["timing_seconds"] if args.quick else 0.3
    inference = export.inference_ms(folder.path / "model.ts", splits.test[0], min_seconds=min_seconds)
    clock.lap("inference timing")  # TorchScript, batch 1 and 256, the process's threads
    deployed = export.deployment(folder.path, model, splits.to("cpu"), args.quantize, min_seconds,
                                 provenance(folder.result["settings"]))
    clock.lap("onnx")
    return {"clean_model_max_logit_difference": difference, "inference_ms": inference, **deployed}


def evaluate_saved(folder, device, quantize=None):
    """Reload the TorchScript model of a finished run, recompute its test accuracy, and export
    it again (no training): a self-contained model.onnx, and model.int8.onnx where the run had
    one or `quantize` asks; what the export measured replaces the old in its results.json."""
    run = read_run(folder.path)
    flag = "--quantize" if quantize else "--evaluate"
    if run is None or run["status"] != "complete" or not (folder.path / "model.ts").exists():
        raise UsageError(f"{flag}: {folder.path} holds no finished run (results.json and model.ts)")
    settings = run["settings"]
    splits = load_splits(settings["dataset"], settings["data_dir"], settings["quick"], settings.get("image_size"),
                         settings.get("train_images"))
    model = export.load_torchscript(folder.path / "model.ts", device)
    test_acc = evaluate(model, splits.test[0].to(device), splits.test[1].to(device))
    print(f"evaluate: {folder.path}/model.ts test_acc={test_acc:.2f} (the run reported {run['final']['test_acc']:.2f})")
    quantize = quantize or ("int8" if "int8" in run["final"] else None)
    deployed = export.deployment(folder.path, model.cpu(), splits, quantize,
                                 QUICK["timing_seconds"] if settings["quick"] else 0.3, provenance(settings))
    run["settings"]["normalisation"] = splits.normalisation  # a run recorded before it was
    folder.result = run
    folder.finish({k: v for k, v in run["final"].items() if k != "export_errors"} | deployed)
    report_deployment(deployed)
    return {"test_acc": test_acc, "reported_test_acc": run["final"]["test_acc"], **deployed}


def provenance(settings):
    """What made a run's model, for its self-contained ONNX files."""
    return {key: settings.get(key) for key in ("dataset", "model", "params", "seed", "torch", "perforatedai")}


# ---------------------------------------------------------------- the run's record

class Clock(defaultdict):
    """Seconds spent per part of the run: `clock.lap(part)` books the time since the last lap."""

    def __init__(self):
        super().__init__(float)
        self.last = time.perf_counter()

    def lap(self, part):
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self[part] += seconds
        return seconds


class Journal:
    """Everything a run reports as it goes: one grep-able line per epoch and one per
    restructure, the epoch saved in the run folder (with a snapshot for --resume), and
    optionally W&B."""

    def __init__(self, folder, clock, use_wandb):
        self.folder, self.clock = folder, clock
        self.wandb = wandb_log.start(folder.result, folder.path) if use_wandb else None  # optional W&B logging
        if use_wandb:
            clock.lap("wandb")
        self.epoch_started = clock.last

    def new_row(self, epoch, optimizer, tracker, model):
        """The epoch's record, begun before it trains: the optimizer's settings and the model size."""
        group = optimizer.param_groups[0]
        return dict(epoch=epoch, lr=group["lr"], weight_decay=group.get("weight_decay", 0.0),
                    params=tracker.count_params(model),
                    dendrite_sets=tracker.dendrite_sets())

    def epoch(self, row, step, state, tracker):
        self.clock.lap("graph" if step.drew_graph else "tracker")
        row.update(best=step.new_best, graph_drawn=step.drew_graph, seconds=time.perf_counter() - self.epoch_started)
        restructure = step.restructure
        self.folder.save_epoch(row, restructure and vars(restructure), state, tracker.files)
        self.clock.lap("checkpoint")
        self.epoch_started = self.clock.last
        print(f"epoch={row['epoch']:<3d} train_loss={row['train_loss']:.4f} train_acc={row['train_acc']:.2f} "
              f"val_acc={row['val_acc']:.2f} test_acc={row['test_acc']:.2f} params={row['params']} "
              f"dendrite_sets={row['dendrite_sets']} seconds={row['seconds']:.2f}", flush=True)
        if restructure:  # printed once the epoch is safely on disk
            e = restructure
            print(f">>> MODEL RESTRUCTURED (Phase 2 triggered) epoch {e.epoch}: {e.kind}: {e.detail} | "
                  f"params {e.params_before:,} -> {e.params_after:,} | val_acc {e.val_acc:.2f}", flush=True)
        if self.wandb:
            self.wandb.epoch(row, restructure)

    def finish(self, final, capacity_test):
        self.folder.finish(final)
        what = "capacity test (library smoke test, not a result)" if capacity_test else "best model"
        print(f"{what}: test_acc={final['test_acc']:.2f} val_acc={final['val_acc']:.2f} (epoch {final['best_epoch']}) "
              f"params={final['params']:,} dendrite_sets={final['dendrite_sets']} epochs={final['epochs']} "
              f"wall={final['wall_seconds']:.1f}s -> {self.folder.given}/results.json")
        report_deployment(final)
        if self.wandb:
            graph = final["graph"] and self.folder.path.parent / final["graph"]
            self.wandb.finish(final, graph)


def report_phase1(folder, tracker, model, capacity_test):
    modules = tracker.dendrite_modules()
    if modules:  # a plain run has none
        params = tracker.count_params(model)
        print(f"Phase 1: dendrite capacity on {', '.join(modules)}; {params:,} parameters"
              + (" (the library's capacity test)" if capacity_test else ""))
        folder.result["phase1"] = {"dendrite_modules": modules, "params": params}


def report_deployment(final):
    """A line per exported ONNX model (the last names its one-thread latency), one per failure."""
    for name, key in (("model.onnx", "onnx"), ("model.int8.onnx", "int8")):
        if key in final:
            m = final[key]
            ts = (f" (TorchScript: {m['torchscript_ms']['1']:.3f} / {m['torchscript_ms']['256']:.2f} ms)"
                  if "torchscript_ms" in m else "")
            print(f"{name}: {m['bytes']:,} bytes, test_acc={m['test_acc']:.2f}; ONNX Runtime, 1 thread: "
                  f"{m['ort_ms']['1']:.3f} ms at batch 1, {m['ort_ms']['256']:.2f} ms at batch 256{ts}")
            if not m.get("within_tolerance", True):
                print(f"warning: {name} differs from the trained model by up to {m['max_logit_difference']:.3g} "
                      "in its logits, beyond float rounding")
    for error in final.get("export_errors", []):
        print(f"export failed: {error}")


def run_settings(args, device, splits, model):
    """What results.json records as the run's settings."""
    return {**{k: v for k, v in vars(args).items() if k != "given"},
            "device": str(device), "cpu": machine.cpu_name(), "date": machine.today(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "perforatedai": None if args.no_dendrites else version("perforatedai"),
            "data_sizes": splits.sizes(), "classes": splits.classes, "normalisation": splits.normalisation,
            "layer_widths": getattr(model, "widths", None),
            "plain_params": count_parameters(model)}


def describe(args, device, splits, model, folder):
    widths = getattr(model, "widths", None)
    return (f"data: {args.dataset} {splits.sizes()} on {device}, {torch.get_num_threads()} thread(s); "
            f"model: {args.model}, " + (f"widths {widths}, " if widths else "")
            + f"{count_parameters(model):,} parameters"
            + (f"; resuming after epoch {folder.epochs_done}" if folder.resuming else ""))


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


def summary(folder, final, model, tracker, last_step, library, clock):
    """The final metrics results.json records; `final` holds the final model's accuracies and
    what its export measured."""
    history, complete = folder.result["history"], bool(last_step and last_step.complete)
    return {**final, "best_epoch": max(r["epoch"] for r in history if r["best"]),
            "epochs": len(history), "params": tracker.count_params(model),
            "dendrite_sets": tracker.dendrite_sets(), "tracker_complete": complete if library else None,
            "wall_seconds": folder.elapsed(), "timing_seconds": dict(clock),
            "graph": f"{folder.name}/{folder.name}.png" if library else None}


def cli(argv=None):
    args = parse_args(argv)
    try:
        result = main(args)
    except NeuroShrinkError as e:
        sys.exit(f"error: {e}")
    except Interrupted as stop:
        sys.exit(128 + stop.signum)
    errors = (result.get("final") or result).get("export_errors")  # a run's record, or --evaluate's
    if errors:  # the run is saved; what failed is said, and the exit status says so
        sys.exit(f"error: the run in {args.out} is saved, but its export failed: {'; '.join(errors)}")


if __name__ == "__main__":
    cli()
