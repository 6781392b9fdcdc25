"""Every setting of a run, declared once: `RunConfig`.

A field says its type, default, help and valid values, whether it defines the run (what
--resume and a sweep compare before continuing a run folder), who sees it on a command line
(`demo`: train_phase2.py's; otherwise only `python -m experiments.run` and Python), and for the
sweeps whether it is an option of theirs (`sweep`: "shared" ones every run of a sweep must
agree on). The command lines are generated from these fields (options.py).

A recipe is a partial config: a field it sets defaults to None, and `resolved()` fills it from
the recipe once (a value given stays). A record (results.json) carries the resolved config in
its "settings" and a schema number; `records.migrate()` brings a record of an older schema up
to date.
"""

import argparse
import dataclasses
from dataclasses import dataclass, field

import torch

from . import augment, data, images, models, placement, precision, recipes
from .errors import UsageError
from .flags import checked, non_negative, number, positive, probability
from .records import migrate

QUICK = dict(n_train=1024, n_eval=256, epochs=30, patience=1, max_dendrites=1,  # quick=True
             timing_seconds=0)  # inference timing: 5 passes per batch size, not 0.3 s
# the library's pai_forward_function, applied to each dendrite's output
DENDRITE_ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}
SWITCHES = ("history", "fixed")
DEVICES = ("auto", "cpu", "cuda", "mps")
GROUPS = ("data", "model", "training", "dendrites", "the run")  # the demo's --help, in this order


def setting(default, help, group="experiments", *, parse=None, choices=None, many=False, defines=True, sweep=None,
            metavar=None, plain_only=False):
    """A RunConfig field. `parse` turns a command-line word into a value and refuses a bad one
    (many=True: a tuple of them); `group` is its section of the demo's --help, "experiments"
    for a setting only the experiments' controls use; `plain_only`: refused in a dendritic run."""
    return field(default=default, metadata=dict(help=help, group=group, parse=parse, choices=choices, many=many,
                                                defines=defines, sweep=sweep, metavar=metavar, plain_only=plain_only))


@dataclass(frozen=True)
class RunConfig:
    # ---- data
    dataset: str = setting("digits", f"{', '.join(data.DATASETS)}; or your own images: folder:PATH (a folder per "
                           "class, optionally under train/ val/ test/) or npz:PATH (arrays x, y, optionally x_test, "
                           "y_test)", "data", parse=data.source, metavar="DATASET", sweep="each")
    data_dir: str | None = setting(None, f"folder the dataset is read from (default ./{data.DEFAULT_DATA_DIR}, and "
                                   "for fashion-mnist Debian's dataset-fashion-mnist); for your own images, where "
                                   "their cache is kept", "data", sweep="each")
    image_size: int | None = setting(None, "your own images: resize every image to S x S (default: the files' size)",
                                     "data", parse=positive(int), metavar="S", sweep="each")
    max_megapixels: float = setting(images.MAX_MEGAPIXELS, "your own images: refuse an image file whose declared "
                                    "size is larger than this many million pixels, before decoding it (a "
                                    "decompression bomb)", parse=positive(float), defines=False, sweep="each",
                                    metavar="M")
    pixel_range: str | None = setting(None, "your own images: how 32-bit integer or floating-point pixels that declare "
                                      "no range become 0-255: LOW:HIGH (0:1, 0:4095, ...) or image (each image's own "
                                      "minimum and maximum); without it such an image stops the run with one line",
                                      parse=checked(images.parse_pixel_range), sweep="each", metavar="LOW:HIGH")
    train_images: int | None = setting(None, "train on the first N training images only (a search on a reduced "
                                       "budget); validation and test stay whole", parse=positive(int), metavar="N")
    # ---- model
    model: object = setting("net", "net, compact, slim, conv2pool or rescnn (model.py); torchvision:NAME (a "
                            "classification model of torchvision's registry, untrained unless --weights); or your "
                            "own: package.module:factory, a callable taking (in_channels, image_size, num_classes, "
                            "width) and returning an nn.Module (in Python: the callable itself, an nn.Module, or a "
                            "callable of no arguments returning one)", "model", sweep="each")
    weights: str | None = setting(None, "start from the state dict in this local file (the tensors whose shapes fit; "
                                  "a torchvision model's colour stem summed for grey images); nothing is downloaded",
                                  metavar="PATH", sweep="each")
    width: float | None = setting(None, "multiplier on the model's widths (net: 32, 64 channels and 128 hidden units "
                                  f"of the PyTorch MNIST example; default {models.WIDTH}); for a model of fixed "
                                  "widths (torchvision's, an nn.Module), the fraction of its channels each layer "
                                  "keeps, cut by torch-pruning and re-initialised (default 1: the model as it is)",
                                  "model", parse=positive(float))
    params: int | None = setting(None, "plain runs: instead of --width, the width whose model has the parameter count "
                                 "nearest BUDGET (within 10%%); with prune_from, the count to prune down to", "model",
                                 parse=positive(int), metavar="BUDGET", plain_only=True)
    dropout: float | None = setting(None, "rate of every nn.Dropout in the model (default: the model's own)",
                                    parse=probability)
    prune_from: str | None = setting(None, "start from the trained model of the finished plain run in RUN, pruned "
                                     "in channels and units (torch-pruning) down to --params, then fine-tuned",
                                     metavar="RUN", plain_only=True)
    prune_importance: str = setting("magnitude", "with --prune-from: how channels are ranked across layers: "
                                    "magnitude (their weights' L2 norm) or lamp (layer-adaptive magnitude)",
                                    choices=("magnitude", "lamp"))
    teacher: str | None = setting(None, "distil from this TorchScript model (a run's model.ts)", metavar="MODEL_TS")
    distill_weight: float = setting(0.5, "with --teacher: the soft targets' share of the loss (0: labels only)",
                                    parse=probability)
    temperature: float = setting(4.0, "with --teacher: the softmax temperature of the soft targets",
                                 parse=positive(float))
    # ---- training (None: the recipe's value)
    recipe: str = setting("default", "the defaults of the training settings: default (Adam 1e-3, batch 64, no "
                          "schedule, early stopping) or strong (AdamW 3e-3, weight decay 0.05, batch 256, warm-up and "
                          "cosine over 30 epochs, label smoothing 0.1, augmentation; plain runs train all 30 epochs, "
                          "dendritic runs add dendrites as each schedule ends). A setting given overrides it",
                          "training", choices=tuple(recipes.RECIPES), sweep="shared")
    epochs: int | None = setting(None, "cap on epochs; the tracker (or early stopping) normally ends the run first "
                                 "(strong: plain runs train exactly this many)", "training", parse=positive(int),
                                 sweep="shared")
    batch_size: int | None = setting(None, "images per training step", "training", parse=positive(int))
    lr: float | None = setting(None, "learning rate (at the start of each schedule)", "training",
                               parse=positive(float))
    optimizer: str | None = setting(None, "adam, adamw (decoupled weight decay), adadelta (with --lr 1 --schedule "
                                    "step: the library's MNIST example)", "training",
                                    choices=tuple(recipes.OPTIMIZERS))
    weight_decay: float | None = setting(None, "the optimizer's weight decay", "training", parse=non_negative)
    schedule: str | None = setting(None, "learning-rate schedule, stepped once per epoch (in dendritic runs by the "
                                   "library, rebuilt at every restructure): cosine, step (StepLR 1, 0.7), plateau",
                                   "training", choices=recipes.SCHEDULES)
    schedule_epochs: int | None = setting(None, "length of one cosine schedule (default: epochs; strong: 30); a "
                                          "dendritic run starts a new one at every restructure",
                                          parse=positive(int), metavar="N")
    warmup: int | None = setting(None, "with schedule cosine: epochs of linear warm-up before the cosine",
                                 parse=number(int, low_allowed=True), metavar="EPOCHS")
    label_smoothing: float | None = setting(None, "share of each target spread evenly over the classes",
                                            parse=probability)
    augment: str | None = setting(None, "training batches shifted by up to 2 pixels (shift), and half of them "
                                  "mirrored (shift-flip); auto: shift-flip where the data allow flips, else shift",
                                  choices=recipes.AUGMENTS)
    channels_last: bool | None = setting(None, "keep the model in channels-last memory order (faster oneDNN CPU "
                                         "convolutions)")
    precision: str = setting("auto", "training precision: autocast with fp32 weights (bf16: CPUs with AVX512-BF16 "
                             "and CUDA; fp16: CUDA); auto: the fastest measured here, fp32 unless another is 10%% "
                             "faster (bf16 held accuracy: docs/performance.md)", "training", choices=precision.CHOICES,
                             sweep="shared")
    seed: int = setting(1, "model initialisation, dropout and batch order", "training", parse=int)
    tta: bool = setting(False, "test-time augmentation: evaluate and export the mean of the model's logits on each "
                        "image and its mirror image (twice the inference cost; needs --augment shift-flip)")
    compile: bool = setting(False, "plain runs: compile the training step with torch.compile (Inductor; on the CPU "
                            "it needs a C++ compiler, without one the run says so and trains eagerly)")
    min_epochs: int | None = setting(None, "plain runs: train at least this many epochs (to match a dendritic run's "
                                     "budget; default 1, strong: all)", parse=positive(int))
    restart_at: tuple = setting((), "plain runs: rebuild the optimizer and schedule after these epochs, as the "
                                "library does at each restructure of the run this one is a control for",
                                parse=positive(int), many=True, metavar="EPOCH", plain_only=True)
    lr_trace: tuple = setting((), "plain runs: the learning rate of epochs 1, 2, ... (the paired dendritic run's); "
                              "after the last, the schedule goes on from there", parse=non_negative, many=True,
                              metavar="LR", plain_only=True)
    # ---- dendrites
    no_dendrites: bool = setting(False, "plain baseline: the same loop without the library, early stopping on "
                                 "validation", "dendrites")
    patience: int | None = setting(None, "epochs without validation improvement before the tracker adds dendrites "
                                   "(plain runs: before early stopping)", "dendrites", parse=positive(int),
                                   sweep="shared")
    max_dendrites: int = setting(3, "most dendrite sets to add", "dendrites", parse=positive(int), sweep="shared")
    switch: str | None = setting(None, "when dendrites are added: history (after --patience epochs without "
                                 "improvement, the library's default) or fixed (as each schedule ends)",
                                 choices=SWITCHES)
    improvement_threshold: tuple | None = setting(None, "the library's improvement_threshold, one gain per dendrite "
                                                  "set (default: its own, 0.001 0.0001 0)", parse=non_negative,
                                                  many=True, metavar="GAIN")
    candidate_init: float | None = setting(None, "the library's candidate_weight_initialization_multiplier "
                                           "(default: its own, 0.01)", parse=positive(float))
    dendrite_activation: str = setting("sigmoid", "the library's pai_forward_function",
                                       choices=tuple(DENDRITE_ACTIVATIONS))
    placement: str = setting("all", "which layers get dendrites: all (every conv and linear layer), later (the later "
                             "half of them), head (only an added linear layer before the classifier, as the library's "
                             "maintainer runs ResNet-18; a plain run gets the layer too), blocks (the later half of the "
                             "model's blocks, each converted whole)", "dendrites", choices=placement.PLACEMENTS)
    head_units: int | None = setting(None, "with --placement head: units of the added layer (default: as many as the "
                                     "classifier's inputs, the maintainer's; fewer: the classifier is rebuilt to read "
                                     "them)", parse=positive(int), metavar="UNITS")
    restructure_lr: float = setting(1.0, "multiplier on the learning rate of every optimizer built after the first "
                                    "(at each restructure, or a plain run's --restart-at); the library's maintainer "
                                    "uses 10", parse=positive(float), metavar="FACTOR")
    capacity_test: bool = setting(False, "Phase 1 check: the library's own test, adding a dendrite set every epoch, "
                                  "3 in all (not a result)")
    # ---- the run
    device: str = setting("auto", "auto (cuda, then mps, then cpu), cpu, cuda, mps", "the run", choices=DEVICES,
                          defines=False)
    threads: int | None = setting(None, "CPU threads for torch (default: torch's choice)",
                                  parse=positive(int), defines=False, sweep="each")
    quantize: str | None = setting(None, "also write model.int8.onnx (ONNX Runtime static int8, calibrated on "
                                   "training images) and record its accuracy, bytes and latency", "the run",
                                   choices=("int8",), sweep="each")
    wandb: bool = setting(False, "log every epoch, restructure and PAI.png to Weights & Biases (offline into "
                          "<out>/wandb/ unless WANDB_API_KEY is set)", "the run", sweep="each")
    graph_every_epoch: bool = setting(False, "let the library redraw PAI.png after every epoch, its own default "
                                      "(slow; by default after each restructure and at the end)")
    graph_at_end: bool = setting(False, "draw PAI.png only when the run ends, as the sweeps do", defines=False)
    test_every_epoch: bool = setting(False, "plain runs: score the test split after every epoch too (by default "
                                     "once, on the model validation chose; a dendritic run's graph plots it every "
                                     "epoch)", defines=False)
    no_export: bool = setting(False, "train and evaluate only: no PAI.png, model.ts, model.onnx, int8 or timing at "
                              "the end (a search trial, whose only product is its validation accuracy)",
                              defines=False)
    no_timing: bool = setting(False, "export and check the model, but time no inference (TorchScript, ONNX "
                              "Runtime): a study's run whose milliseconds are measured elsewhere", defines=False)
    quick: bool = setting(False, "smoke run: {n_train} train / {n_eval} val / {n_eval} test images, patience "
                          "{patience}, {max_dendrites} dendrite set, at most {epochs} epochs".format(**QUICK),
                          "the run", sweep="shared")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if isinstance(value, list):  # a record's JSON list, or a caller's
                object.__setattr__(self, f.name, value := tuple(value))
            if value is None or value is False or value == ():
                continue
            if meta["choices"] and value not in meta["choices"]:
                raise UsageError(f"{flag(f.name)} {value}: choose from {', '.join(meta['choices'])}")
            if meta["parse"]:
                for item in value if meta["many"] else (value,):
                    try:
                        meta["parse"](str(item))
                    except argparse.ArgumentTypeError as e:
                        raise UsageError(f"{flag(f.name)}: {e}") from None

    # ------------------------------------------------------------ resolving

    def resolved(self):
        """The config a run trains: the recipe's values for what is not given, then --quick's
        limits; settings that do not go together refused. Idempotent."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        values = recipes.defaults(self.recipe, data.label(self.dataset))
        values["width"] = self.width or models.default_width(self.model)
        if self.recipe == "strong":
            cycle = values.pop("epochs")
            if self.no_dendrites:  # one schedule over the whole fixed budget, which min_epochs makes whole
                values["epochs"] = self.schedule_epochs or cycle
                values["schedule_epochs"] = self.epochs or cycle
                values["min_epochs"] = given.get("epochs", values["epochs"])
            else:  # a schedule per architecture, under the default recipe's cap
                values.update(schedule_epochs=cycle, epochs=recipes.RECIPES["default"]["epochs"])
        config = dataclasses.replace(self, **(values | given))
        config = dataclasses.replace(config, min_epochs=config.min_epochs or 1,
                                     augment=augment.resolve(config.augment, data.label(config.dataset)))
        if config.quick:
            epochs = min(config.epochs, QUICK["epochs"])
            config = dataclasses.replace(config, epochs=epochs, patience=QUICK["patience"],
                                         max_dendrites=QUICK["max_dendrites"],
                                         min_epochs=min(config.min_epochs, epochs))
        config = dataclasses.replace(config, schedule_epochs=config.schedule_epochs or config.epochs)  # quick's cap
        config.check()
        return config

    def check(self):
        plain_only = [flag(f.name) for f in dataclasses.fields(self) if f.metadata["plain_only"] and getattr(self, f.name)]
        if plain_only and not self.no_dendrites:
            raise UsageError(f"{', '.join(plain_only)}: only for plain runs (add --no-dendrites)")
        if self.placement in ("later", "blocks") and self.no_dendrites:
            raise UsageError(f"--placement {self.placement}: only for dendritic runs (drop --no-dendrites); a plain "
                             "run takes all, or head for the added layer")
        if self.placement == "head" and self.prune_from:
            raise UsageError("--placement head: not with --prune-from (the pruned model keeps the wide run's layers)")
        if self.head_units and self.placement != "head":
            raise UsageError("--head-units: only with --placement head")
        if self.capacity_test and self.no_dendrites:
            raise UsageError("--capacity-test: the library's test, not for plain runs (drop --no-dendrites)")
        if self.compile and not self.no_dendrites:
            raise UsageError("--compile: plain runs only (add --no-dendrites); the library restructures a dendritic "
                             "model, which a compiled graph would not follow")
        if self.tta and self.augment != "shift-flip":
            raise UsageError(f"--tta needs flips: --augment shift-flip (this run's is {self.augment}; a class that a "
                             "mirror image changes, a 3 or a 7, rules both out)")
        if self.prune_from and not self.params:
            raise UsageError("--prune-from needs --params: the parameter count to prune down to")
        if self.wandb:
            try:
                import wandb  # noqa: F401  (checked here, before the output folder is touched)
            except ImportError:
                raise UsageError("--wandb needs the wandb package: pip install wandb") from None

    def defining(self):
        """The settings that define the run, as --resume and a sweep compare them. With
        `params` the width follows from the model, the budget and the data, all compared."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["defines"] and not (f.name == "width" and self.params)}

    def model_name(self):
        """`model` as a record holds it: a name, or module:qualname of a callable (of an instance's class)."""
        from .models import name_of

        return name_of(self.model)

    # ------------------------------------------------------------ records

    def as_settings(self):
        """The config as a record stores it (JSON)."""
        values = dataclasses.asdict(self) | {"model": self.model_name()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def of_record(cls, record):
        """The config a record (of any schema) was trained with."""
        settings = migrate(record)["settings"]
        return cls(**{f.name: settings[f.name] for f in dataclasses.fields(cls) if f.name in settings})


def flag(name):
    return "--" + name.replace("_", "-")
