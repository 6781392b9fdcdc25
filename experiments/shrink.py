"""Which method shrinks a CNN best? Every method at the same parameter budgets, tuned alike.

At each budget (parameters), each method makes a model of that size:

    plain              the narrow CNN whose width gives the budget
    dendritic          the CNN plus one dendrite set (the library), its width chosen so that
                       with the set the model has the budget; a run that keeps no set ends
                       at about half of it
    pruned             a wide plain CNN, trained, pruned in channels and units down to the
                       budget (torch-pruning, global magnitude; --recipe strong: global
                       LAMP, whose scores stay comparable across layers after weight decay),
                       then fine-tuned
    distilled          the narrow CNN trained on the labels and the same wide CNN's soft outputs
    *-mnist            the library's MNIST example recipe: Adadelta lr 1, StepLR(1, 0.7)
    *-api              its API README's recipe: Adam with ReduceLROnPlateau
                       (both switching after the library's default 10 epochs without improvement)
    restarts-*         the control for a recipe: the plain CNN with the recipe, its optimizer
                       and schedule rebuilt at exactly the epochs where the paired dendritic run
                       restructured, and each epoch at that run's learning rate (the library
                       restarts a rebuilt schedule, then advances it by steps of its own)
    matched            the control for this project's recipe: the plain CNN trained as the
                       paired dendritic run was, with its configuration (less the dendrites'
                       settings), epochs, restarts and learning rates, so that the dendrites are
                       the only difference (two searches of a large space draw differently)

Equal tuning: every method but the controls gets the same number of search trials (seed 0,
validation only): TPE (its draws seeded by the study's name and the draw's number, so that a
rerun draws the same), or where the search space is a finite set (the library recipes'
methods) distinct configurations in random order, all of them if fewer (a recipe's plain CNN
tunes dropout alone: 3; without dropout it has nothing to tune, and one trial). A control
takes its plain recipe's choice (matched: the dendritic search's). Then seeds 1..S of the chosen
configuration, tested. Equal budgets: each seed of a plain method trains at least as many
epochs as the same seed of the dendritic run it is compared with. The wide model's
training (seeds 0..S) is a cost of pruning and distillation, reported with them.

    python -m experiments.shrink                          # digits, net
    python -m experiments.shrink --model rescnn
    python -m experiments.shrink --dataset fashion-mnist --epochs 60 --trials 4
    python -m experiments.shrink --report-only

With --recipe strong (the five methods above the library recipes', on the compact CNN), every
run trains with the strong recipe: a dendritic run adds its set as each schedule of
--schedule-epochs ends (the library's fixed switch), and every other run trains exactly the
same seed's dendritic epochs (plain: under one schedule; matched: under its restarts). The
search may run on a reduced budget, the same for every method (--search-epochs,
--search-images); it draws --random-trials configurations at random, then TPE's. Every run is
also quantized to int8; --time-inference then times every final model in ONNX Runtime, one
after another in one process, and the report (shrink-<model>-strong.*) counts bytes and
milliseconds. Each seed run's model.onnx and model.int8.onnx, and the wide model's model.ts and
results.json, are kept with the records (shrink-<model>-strong-models/): a sweep continued on
another machine starts pruning and distillation from them, and the timing pass times them in a
fresh clone, on any CPU:

    python -m experiments.shrink --dataset fashion-mnist --model compact --recipe strong --search-images 15000
    python -m experiments.shrink --dataset fashion-mnist --model compact --recipe strong --time-inference

Your model or your images (docs/own-data.md): the defaults follow the verdict, the strong recipe
and the methods dendritic, matched, plain and pruned; --minutes (default 15) sizes the search
trials, seeds and the search's images to fit, from a timing of the model on the data, and the
plan (runs per stage, minutes expected) is printed before the first run, progress after each.

Every study ends with the answer in words (also on top of its report): per budget, whether the
dendrites beat their control beyond the seeds' spread, the method to use (by validation), and
its best-validation seed shipped self-contained to results/<dataset>/deploy/<study>/<budget>/
(experiments/deploy.py; --fit 30kB 0.05ms ships what fits a device instead).

Like the width sweep it is a worker of studies in an Optuna storage (results/<dataset>/sweep.db
by default): stop and start it at will, or start several. Outputs in results/<dataset>/:
shrink-<model>.md (the verdict tables), shrink-<model>.png, shrink-<model>.csv.
"""

import csv
import math
import statistics
import time
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch.nn as nn

from experiments import deploy, plan, report, spaces, studies, verdict
from experiments.report import deployment_table, mean_std
from experiments.runner import check_settings, cli, common_parser, folders, run_cell
from model import MODELS, count_parameters, width_for_params
from neuroshrink import data, models
from neuroshrink.dendrites import count_with_one_set
from neuroshrink.errors import UsageError
from neuroshrink.flags import positive

MNIST_RECIPE = ("--optimizer", "adadelta", "--lr", "1", "--schedule", "step", "--patience", "10")
API_RECIPE = ("--optimizer", "adam", "--schedule", "plateau", "--patience", "10")


@dataclass(frozen=True)
class Method:
    name: str
    plain: bool                   # trained without the library (--no-dendrites)
    recipe: tuple = ()            # fixed training flags; () is this project's, searched (lr, patience, schedule)
    paired: str | None = None     # the dendritic method whose seed runs set this one's epochs (and restarts)
    control: str | None = None    # a control takes this method's configuration and the paired restarts
    wide: str | None = None       # "--prune-from" or "--teacher": starts from the wide plain model


METHODS = (
    Method("dendritic", plain=False),
    Method("plain", plain=True, paired="dendritic"),
    Method("matched", plain=True, paired="dendritic", control="dendritic"),
    Method("pruned", plain=True, paired="dendritic", wide="--prune-from"),
    Method("distilled", plain=True, paired="dendritic", wide="--teacher"),
    Method("dendritic-mnist", plain=False, recipe=MNIST_RECIPE),
    Method("plain-mnist", plain=True, recipe=MNIST_RECIPE, paired="dendritic-mnist"),
    Method("restarts-mnist", plain=True, recipe=MNIST_RECIPE, paired="dendritic-mnist", control="plain-mnist"),
    Method("dendritic-api", plain=False, recipe=API_RECIPE),
    Method("plain-api", plain=True, recipe=API_RECIPE, paired="dendritic-api"),
    Method("restarts-api", plain=True, recipe=API_RECIPE, paired="dendritic-api", control="plain-api"),
)
BY_NAME = {m.name: m for m in METHODS}
WIDE = Method("wide", plain=True)  # the model pruned and distilled from
STRONG_METHODS = ("dendritic", "plain", "matched", "pruned", "distilled")  # the library recipes bring their own
# Your model or your images: the question is dendritic against its control, and the best plain
# way to the budget (docs/own-data.md says why distillation and the library recipes are left out).
USER_METHODS = ("dendritic", "matched", "plain", "pruned")
USER_MINUTES = 15  # the default time budget of a study of your model or images
# No rescnn width gives 1,000 parameters on digits within 10 %, nor 300 with one dendrite set;
# no compact width gives 5,000 with one set (4,469 is the nearest), 4,700 it does.
DEFAULT_BUDGETS = {("digits", "net"): [1000, 3658, 13706, 300, 50000], ("digits", "rescnn"): [3658, 13706, 50000],
                   ("fashion-mnist", "net"): [5500, 19000], ("fashion-mnist", "compact"): [20000, 4700, 75000]}
# The wide model pruned and distilled from: wider than the largest budget (compact: 303,338 parameters).
DEFAULT_WIDE = {"digits": 2.0, "fashion-mnist": 0.25, ("fashion-mnist", "compact"): 1.0}
FRACTIONS = (2, 4, 8)  # default budgets elsewhere: 1/2, 1/4, 1/8 of the model's size at width 1


def get_args_parser():
    p = common_parser("shrink", __doc__.split("\n\n")[0])
    p.set_defaults(epochs=100, max_dendrites=1, recipe=None, seeds=None)  # resolve_defaults: by model and data
    p.add_argument("--budgets", type=positive(int), nargs="+", default=None,
                   help="parameter budgets, trained in this order (default: digits 1000 3658 13706 300 50000, "
                        "with rescnn 3658 13706 50000; fashion-mnist 5500 19000; otherwise 1/2, 1/4 and 1/8 "
                        "of the model's parameters at width 1, those every method can reach)")
    p.add_argument("--wide", type=positive(float), default=None,
                   help="width of the wide plain model that is pruned and distilled from "
                        "(default: digits 2, fashion-mnist 0.25, with compact 1, for the built-in models; "
                        "otherwise 1)")
    p.add_argument("--methods", nargs="+", default=None, choices=[m.name for m in METHODS],
                   metavar="METHOD", help=f"which methods ({', '.join(m.name for m in METHODS)}; default: all, "
                                          f"--recipe strong: {', '.join(STRONG_METHODS)})")
    p.add_argument("--trials", type=positive(int), default=None,
                   help="search trials per method and budget, the same for every method "
                        "(fewer only where a method's space has fewer configurations; default 8, --recipe strong 12; "
                        "your model or images: as --minutes allows)")
    p.add_argument("--minutes", type=positive(float), default=None, metavar="M",
                   help="--recipe strong: size the search trials, seeds and the search's training images to fit M "
                        f"minutes on this machine, by a timing of the model on the data (default for your model or "
                        f"images: {USER_MINUTES}; --trials, --seeds and --search-images given stay as given)")
    strong = p.add_argument_group("--recipe strong")
    strong.add_argument("--schedule-epochs", type=positive(int), default=15, metavar="S",
                        help="each architecture's schedule: a dendritic run adds its set after S epochs and trains "
                             "S more; every other run trains as many")
    strong.add_argument("--search-epochs", type=positive(int), default=None, metavar="S",
                        help="the search's schedule, the same for every method (default: --schedule-epochs)")
    strong.add_argument("--search-images", type=positive(int), default=None, metavar="N",
                        help="the search trains on the first N training images, every method (default: all)")
    strong.add_argument("--random-trials", type=positive(int), default=4, metavar="K",
                        help="the search's first K configurations are drawn at random, the rest by TPE")
    p.add_argument("--fit", type=deploy.limit, nargs="+", default=None, metavar="LIMIT",
                   help="no training: of every seed run's fp32 and int8 model, ship the most accurate on validation "
                        "whose file and one-thread batch-1 latency fit, e.g. --fit 30kB 0.05ms "
                        "(to <results>/<dataset>/deploy/<study>/fit-<limits>/)")
    strong.add_argument("--time-inference", action="store_true",
                        help="no training: time every final model (fp32 and int8; from its run folder, else "
                             "the copy kept with the records) in ONNX Runtime on one thread, one after another, "
                             "into shrink-<model>-strong-latency.json; nothing else may run meanwhile")
    return p


# ---------------------------------------------------------------- what each method trains

DROPOUTS = (0.1, 0.3, 0.5)


def suggest(trial, method, dropout=True, strong=False):
    """A configuration from the method's search space. Every method: dropout, if the model has
    any. This project's recipe: also the learning rate, patience and schedule (none or
    cosine); the strong recipe: the learning rate, weight decay and label smoothing.
    Dendritic: what the library's W&B sweep template searches. Distilled: the soft targets'
    weight and temperature."""
    hp = {"dropout": trial.suggest_categorical("dropout", DROPOUTS)} if dropout else {}
    hp |= {} if method.recipe else spaces.suggest_strong(trial) if strong else spaces.suggest_recipe(trial)
    hp |= {} if method.plain else spaces.suggest_dendrites(trial)
    if method.wide == "--teacher":
        hp |= {"distill_weight": trial.suggest_categorical("distill_weight", [0.25, 0.5, 0.75]),
               "temperature": trial.suggest_categorical("temperature", [2.0, 4.0])}
    return hp


def width_for(args, method, budget, shape):
    """The width of the method's model at the budget (pruned: the wide model it starts from)."""
    if method.wide == "--prune-from":
        return args.wide
    count = count_parameters if method.plain else count_with_one_set  # with --max-dendrites 1
    return width_for_params(models.model_factory(args.model), budget, count=count, **shape)


def budget_epochs(args, search=False):
    """--recipe strong: the epochs of a dendritic run (a schedule per architecture), which
    every other run of the same seed trains (the search's: its reduced schedule)."""
    return (args.max_dendrites + 1) * (args.search_epochs if search else args.schedule_epochs)


def strong_flags(args, method, epochs, search):
    """--recipe strong: a dendritic run adds its set as each schedule ends; any other trains
    exactly `epochs` (plain: under one schedule; a control: under the dendritic run's). A
    search's reduction (its schedule, its training images, its epochs: a dendritic trial whose
    set was rolled back and tried again stops there too) is the same for every method."""
    schedule = args.search_epochs if search else args.schedule_epochs
    extra = ["--train-images", str(args.search_images)] if search and args.search_images else []
    # Magnitude pruning of a weight-decayed model collapses layers (docs/verdict-strong.md).
    extra += ["--prune-importance", "lamp"] if method.wide == "--prune-from" else []
    if not method.plain:
        return extra + ["--schedule-epochs", str(schedule)] + (["--epochs", str(epochs)] if search else [])
    return extra + ["--epochs", str(epochs), "--min-epochs", str(epochs),
                    "--schedule-epochs", str(schedule if method.control else epochs)]


def flags(args, method, budget, hp, seed, wide_runs, epochs=None, search=False):
    """train_phase2 flags besides the cell's (width, seed, min epochs): how the model gets the
    budget's size, the recipe, the wide model it starts from, the configuration; with
    --recipe strong, the run's epochs (`epochs`: a plain run's) and a search's reduction."""
    extra = list(method.recipe) + (strong_flags(args, method, epochs, search) if args.recipe == "strong" else [])
    extra += ["--no-dendrites", "--params", str(budget)] if method.plain else []
    if method.wide:
        wide = wide_runs[seed]
        extra += [method.wide, str(wide / "model.ts") if method.wide == "--teacher" else str(wide)]
    return extra + spaces.flags(hp)


# ---------------------------------------------------------------- the studies

def search_space(args, method):
    """What the method's search draws from, {name: distribution}; a control: its plain recipe's."""
    trial = optuna.create_study().ask()  # an in-memory study, to read the space off suggest()
    suggest(trial, BY_NAME[method.control] if method.control else method, args.model_has_dropout,
            args.recipe == "strong")
    return trial.distributions


def without_repeats(args, method):
    """The number of configurations of the method's search space where it is a finite set of
    more than one (every choice categorical: the library recipes' methods), else None. Such a
    search draws distinct configurations (TPE's first 10 draws are random, and repeat)."""
    space = search_space(args, method)
    if all(isinstance(d, optuna.distributions.CategoricalDistribution) for d in space.values()):
        size = math.prod(len(d.choices) for d in space.values())
        return size if size > 1 else None
    return None


def study_name(args, stage, method=None, budget=None):
    name = f"shrink-{data.label(args.dataset)}-{models.label(args.model)}"
    name += "-strong" if args.recipe == "strong" else ""
    if stage in ("wide", "plan"):  # the wide model's seeds; the study's size, as its first worker chose it
        return f"{name}-{stage}"
    if method.recipe:  # a library recipe's: its dendritic search draws distinct configurations, and the
        # others pair with it (not the studies of the TPE draws that came before)
        stage = {"search": "distinct", "seeds": "distinct-seeds"}[stage]
    return f"{name}-b{budget}-{method.name}-{stage}"


def open_study(args, url, name, sampler=None):
    if args.report_only and not studies.study_exists(url, name):
        return None  # nothing there: report, but leave the storage as it is
    study = studies.open_study(url, name, args.heartbeat, sampler=sampler)
    if not args.report_only:
        check_settings(study, args)
        if args.recipe == "strong":
            check_strong_settings(study, args)
    return study


STRONG_SETTINGS = ("schedule_epochs", "search_epochs", "search_images", "random_trials", "trials")


def check_strong_settings(study, args):
    """Every run of a --recipe strong study shares its budgets and its search's: the first
    worker sets them."""
    wanted = {key: getattr(args, key) for key in STRONG_SETTINGS}
    stored = study.user_attrs.get("strong")
    if stored is None:
        study.set_user_attr("strong", wanted)
    elif stored != wanted:
        key = next(k for k in STRONG_SETTINGS if stored[k] != wanted[k])
        raise UsageError(f"the sweep {study.study_name} holds runs made with --{key.replace('_', '-')} "
                         f"{stored[key]}, not {wanted[key]}; use another --results folder")


def train_wide(args, url, runs):
    """The wide plain model, seeds 0..S: what pruning starts from and distillation learns from."""
    study = open_study(args, url, study_name(args, "wide"))
    if study is None:
        return {}, []

    epochs = budget_epochs(args) if args.recipe == "strong" else 1

    def train(cell):
        print(f"\n=== wide {args.model} width {args.wide:g} seed {cell['seed']}", flush=True)
        extra = strong_flags(args, WIDE, epochs, search=False) if args.recipe == "strong" else []
        record = trained(args, ("wide", "wide", None), cell, runs / study.study_name / f"s{cell['seed']}",
                         ["--no-dendrites", *extra])
        if args.kept:
            verdict.keep([record], args.kept, verdict.WIDE_FILES)
        return record["val_acc"], record
    cells = [{"width": args.wide, "method": "wide", "seed": s, "min_epochs": epochs} for s in range(args.seeds + 1)]
    if not args.report_only:
        studies.work(study, lambda records: cells, train, poll=min(5, args.heartbeat))
    records = studies.records(study)
    if not args.kept or args.report_only:  # a report needs the wide model's records only
        return {r["seed"]: Path(r["run"]) for r in records}, records
    verdict.keep(records, args.kept, verdict.WIDE_FILES)
    # its own run folder, or (trained on another machine) the copy kept with the records
    return {r["seed"]: verdict.run_folder(r, args.kept, verdict.WIDE_FILES) for r in records}, records


def search_trials(args, method):
    """How many search trials the method gets: --trials, fewer where its space is a smaller finite
    set, one where it has nothing to tune (a recipe's plain CNN without dropout)."""
    size = without_repeats(args, method)
    return min(args.trials, size) if size else args.trials if search_space(args, method) else 1


def trained(args, key, cell, run_dir, extra=()):
    """run_cell, its time given to the study's progress (key: stage, method, budget)."""
    started = time.perf_counter()
    record = run_cell(args, cell, run_dir, extra)
    if args.progress:
        args.progress.finished(key, time.perf_counter() - started)
    return record


def search_method(args, url, method, budget, shape, wide_runs, runs):
    """The method's search trials at the budget (seed 0, validation only); returns the study."""
    size = without_repeats(args, method)
    with studies.quietly():  # "experimental"; it draws at random, never the same configuration twice
        sampler = optuna.samplers.BruteForceSampler(seed=spaces.SEARCH_SEED) if size else (
            studies.SeededTPE(random_trials=args.random_trials) if args.recipe == "strong" else None)
    study = open_study(args, url, study_name(args, "search", method, budget), sampler)
    if study is None or args.report_only:
        return study
    trials = search_trials(args, method)
    study.set_user_attr("trials", trials)

    def train(trial, name):
        hp = suggest(trial, method, args.model_has_dropout, args.recipe == "strong")
        print(f"\n=== search {study.study_name} {name}: {hp}", flush=True)
        epochs = budget_epochs(args, search=True) if args.recipe == "strong" else 1
        cell = {"width": width_for(args, method, budget, shape), "method": method.name, "seed": 0,
                "min_epochs": epochs}
        record = trained(args, ("search", method.name, budget), cell, runs / study.study_name / name,
                         flags(args, method, budget, hp, 0, wide_runs, epochs, search=True))
        record = {key: value for key, value in record.items() if key != "test_acc"} | {"hp": hp}  # never seen
        return record["val_acc"], record
    studies.search(study, trials, train, poll=min(5, args.heartbeat))
    return study


def chosen(study):
    """The configuration of the best of the study's first `trials` finished trials (later ones
    are surplus of a race), and the validation accuracy of all of them if they all scored the
    same, else None: such a search chose nothing (max() kept the first drawn), as when every
    trial's model trained dead."""
    counted = studies.finished(study)[:study.user_attrs["trials"]]
    if not counted:
        return None, None
    hp = max(counted, key=lambda t: t.value).user_attrs["record"]["hp"]
    return hp, counted[0].value if len(counted) > 1 and len({t.value for t in counted}) == 1 else None


def train_seeds(args, url, method, budget, shape, hp, paired, wide_runs, runs):
    """Seeds 1..S of the chosen configuration; a paired method's seed s waits for the paired
    dendritic run of seed s, and trains at least its epochs (a control: with its restarts)."""
    study = open_study(args, url, study_name(args, "seeds", method, budget))
    if study is None or args.report_only:
        return study
    seeds, width = range(1, args.seeds + 1), width_for(args, method, budget, shape)

    def cells_for(records):
        if method.paired is None:
            return [{"width": width, "method": method.name, "seed": s, "min_epochs": 1} for s in seeds]
        by_seed = {r["seed"]: r for r in paired}
        return [{"width": width, "method": method.name, "seed": s, "min_epochs": by_seed[s]["epochs"],
                 **({"restart_at": by_seed[s]["restarts"], "lr_trace": by_seed[s]["lrs"]} if method.control else {})}
                for s in seeds if s in by_seed]

    def train(cell):
        print(f"\n=== {study.study_name} seed {cell['seed']}: {hp}", flush=True)
        extra = flags(args, method, budget, hp, cell["seed"], wide_runs, cell["min_epochs"])
        if method.control:  # the paired dendritic run's restarts and learning rates
            extra += ["--lr-trace", *map(str, cell["lr_trace"])]
            extra += ["--restart-at", *map(str, cell["restart_at"])] if cell["restart_at"] else []
        record = trained(args, ("seeds", method.name, budget), cell, runs / study.study_name / f"s{cell['seed']}",
                         extra)
        if args.kept:
            verdict.keep([record], args.kept, verdict.SEED_FILES)
        return record["val_acc"], record | {"hp": hp}
    studies.work(study, cells_for, train, poll=min(5, args.heartbeat))
    return study


def run_budget(args, url, budget, shape, wide_runs, runs, before=None):
    """The methods at one budget, dendritic methods first (the others pair with their seeds):
    without `wide_runs` those that do not start from the wide model, with it those that do
    (`before`: the others' results, to pair with). Returns {method name: (its seed records,
    the accuracy of its undecided search or None)}, `before` included."""
    results, chosen_hp, undecided = dict(before or {}), {}, {}
    for method in sorted((BY_NAME[n] for n in args.methods), key=lambda m: m.plain):
        if bool(method.wide) != bool(wide_runs):
            continue
        if method.control is None:
            found = search_method(args, url, method, budget, shape, wide_runs, runs)
            chosen_hp[method.name], undecided[method.name] = chosen(found) if found is not None else (None, None)
        hp = chosen_hp.get(method.control or method.name)
        if hp is None:  # its search has not run (or, for a control, its plain recipe's)
            continue
        if method.plain:  # matched: the dendritic search's choice, less what only dendrites have
            hp = {key: value for key, value in hp.items() if key not in spaces.DENDRITE_SETTINGS}
        paired = results.get(method.paired, ([], None))[0]
        study = train_seeds(args, url, method, budget, shape, hp, paired, wide_runs, runs)
        if study is not None:
            results[method.name] = studies.records(study), undecided[method.control or method.name]
    return results


# ---------------------------------------------------------------- the report

def fmt(values, digits=2):
    return report.fmt(mean_std(values), digits)


def verdict_rows(args, results, wide_records):
    """Per budget and method: the numbers of its seed runs."""
    wide_minutes = sum(r["wall_seconds"] for r in wide_records if r["seed"] > 0) / 60 / max(args.seeds, 1)
    rows = []
    order = [m.name for m in sorted(METHODS, key=lambda m: m.plain)]  # dendritic methods first, as they train
    for budget, by_method in results.items():
        for name, (records, undecided) in sorted(by_method.items(), key=lambda item: order.index(item[0])):
            if not records:
                continue
            method = BY_NAME[name]
            timed = [r for r in records if r.get("inference_ms")]
            rows.append({
                "budget": budget, "method": name, "n": len(records),
                "test_acc": [r["test_acc"] for r in records], "params": [r["params"] for r in records],
                "epochs": [r["epochs"] for r in records], "minutes": [r["wall_seconds"] / 60 for r in records],
                "ms1": [r["inference_ms"]["1"] for r in timed], "ms256": [r["inference_ms"]["256"] for r in timed],
                "wide_minutes": wide_minutes if method.wide else 0.0,
                "hp": records[0]["hp"], "undecided": undecided, "records": records})
    return rows


def table(args, rows, wide_records):
    lines = [f"## Which method shrinks a CNN best? {args.dataset}, {args.model}", "",
             f"Each method tuned with {args.trials} search trials on validation (seed 0): Optuna's TPE, or where "
             "the space is a finite set (the library recipes' methods) as many distinct configurations in random "
             "order, all of them if fewer; a restart control takes its plain recipe's choice, matched the "
             f"dendritic search's. Then seeds 1-{args.seeds} of its choice, tested; mean ± std over those seeds. "
             "Parameters: the library's count for dendritic models, the dense count otherwise. Inference: the "
             "exported model.ts on the CPU, median ms per forward pass. Training: minutes per run (pruned and distilled: plus the wide model's, per seed).", ""]
    if wide_records:
        wide = [r for r in wide_records if r["seed"] > 0]
        if wide:
            lines += [f"The wide model (plain, width {args.wide:g}): {fmt([r['params'] for r in wide], 0)} parameters, "
                      f"test {fmt([r['test_acc'] for r in wide])} %, {fmt([r['wall_seconds'] / 60 for r in wide])} "
                      "training minutes.", ""]
    lines += ["| budget | method | test acc % | params | inference ms, batch 1 | batch 256 | training min | epochs "
              "| seeds | configuration |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: r["budget"]):
        minutes = fmt(row["minutes"]) + (f" + {row['wide_minutes']:.2f}" if row["wide_minutes"] else "")
        ms = (fmt(row["ms1"], 3), fmt(row["ms256"], 2)) if row["ms1"] else ("", "")
        lines.append(f"| {row['budget']:,} | {row['method']} | {fmt(row['test_acc'])} | {fmt(row['params'], 0)} "
                     f"| {ms[0]} | {ms[1]} | {minutes} | {fmt(row['epochs'], 0)} | {row['n']} "
                     f"| {spaces.describe(row['hp'])}{undecided_note(row['undecided'])} |")
    budgets = sorted({r["budget"] for r in rows})
    cell = {(r["method"], r["budget"]): r for r in rows}
    lines += ["", "Test accuracy % by budget (mean ± std over seeds):", "",
              "| method | " + " | ".join(f"{b:,}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for name in dict.fromkeys(m.name for m in METHODS):
        if any((name, b) in cell for b in budgets):
            lines.append(f"| {name} | " + " | ".join(fmt(cell[(name, b)]["test_acc"]) if (name, b) in cell else ""
                                                    for b in budgets) + " |")
    lines += [""] + deployment_table([((f"{r['budget']:,}", r["method"]), r["records"])
                                      for r in sorted(rows, key=lambda r: r["budget"])], "budget | method")
    lines += ["Best mean test accuracy per budget, and every method within one standard deviation of it:", ""]
    for budget in sorted({r["budget"] for r in rows}):
        at = [r for r in rows if r["budget"] == budget]
        complete = [r for r in at if r["n"] == args.seeds]
        if len(complete) < len(args.methods):  # a sweep still running: no verdict from part of it
            lines.append(f"- {budget:,}: not all in yet ({len(complete)} of {len(args.methods)} methods with "
                         "every seed); no verdict")
            continue
        best = max(at, key=lambda r: statistics.fmean(r["test_acc"]))
        spread = statistics.stdev(best["test_acc"]) if len(best["test_acc"]) > 1 else 0.0
        near = [r["method"] for r in at if r is not best
                and statistics.fmean(r["test_acc"]) >= statistics.fmean(best["test_acc"]) - spread]
        lines.append(f"- {budget:,}: **{best['method']}** {fmt(best['test_acc'])} %"
                     + (f"; within its spread: {', '.join(near)}" if near else "; no other method within its spread"))
    return "\n".join(lines) + "\n"


def undecided_note(accuracy):
    if accuracy is None:
        return ""
    return f" (search undecided: every trial {accuracy:.2f} % on validation, so the first drawn was kept)"


def plot(args, rows, path):
    """Test accuracy against parameters, every method with error bars: all budgets on the
    left, the budgets where every method is above chance on the right, zoomed in."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    colors = [*plt.rcParams["axes.prop_cycle"].by_key()["color"], "black"]  # 10 colors, and one for the 11th
    budgets = sorted({r["budget"] for r in rows})
    zoomed = [b for b in budgets if b > budgets[0]] or budgets
    for ax, shown in zip(axes, (budgets, zoomed)):
        for i, name in enumerate(dict.fromkeys(m.name for m in METHODS)):
            pts = sorted((statistics.fmean(r["params"]), statistics.fmean(r["test_acc"]),
                          statistics.stdev(r["test_acc"]) if r["n"] > 1 else 0.0)
                         for r in rows if r["method"] == name and r["budget"] in shown)
            if pts:
                style = "--" if not BY_NAME[name].plain else ":" if BY_NAME[name].control else "-"
                ax.errorbar(*zip(*pts), fmt="o" + style, color=colors[i % len(colors)], capsize=3, label=name,
                            alpha=0.85)
        ax.set_xscale("log")
        # Ticks at the budgets: over a narrow range (one budget, zoomed) the log axis's own
        # minor labels run into each other.
        ax.set_xticks(shown, [f"{b:,}" for b in shown])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("parameters (log scale; ticks at the budgets)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test accuracy % (mean ± std over seeds)")
    axes[0].set_title("every budget")
    axes[1].set_title(f"budgets from {zoomed[0]:,} (zoomed)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Shrinking a CNN on {args.dataset} ({args.model}): each method at each budget "
                 "(dashed: dendrites; dotted: controls)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["budget", "method", "seed_runs", "test_acc_mean", "test_acc_std", "params_mean",
                         "inference_ms_batch1", "inference_ms_batch256", "training_minutes", "wide_minutes",
                         "onnx_bytes", "ort_ms_batch1", "int8_test_acc", "int8_bytes"])
        for r in rows:
            onnx = [x["onnx"] for x in r["records"] if x.get("onnx")]  # blank: recorded before ONNX export
            int8 = [x["int8"] for x in r["records"] if x.get("int8")]
            writer.writerow([r["budget"], r["method"], r["n"], round(statistics.fmean(r["test_acc"]), 3),
                             round(statistics.stdev(r["test_acc"]), 3) if r["n"] > 1 else 0.0,
                             round(statistics.fmean(r["params"])),
                             round(statistics.median(r["ms1"]), 4) if r["ms1"] else "",
                             round(statistics.median(r["ms256"]), 3) if r["ms256"] else "",
                             round(statistics.fmean(r["minutes"]), 3), round(r["wide_minutes"], 3),
                             round(statistics.fmean(o["bytes"] for o in onnx)) if onnx else "",
                             round(statistics.median(o["ort_ms"]["1"] for o in onnx), 4) if onnx else "",
                             round(statistics.fmean(q["test_acc"] for q in int8), 3) if int8 else "",
                             round(statistics.fmean(q["bytes"] for q in int8)) if int8 else ""])


def check_methods(names):
    """A paired method needs its dendritic run (its epochs), a control its plain recipe too."""
    for name in names:
        needed = [other for other in dict.fromkeys((BY_NAME[name].paired, BY_NAME[name].control))
                  if other and other not in names]
        if needed:
            raise UsageError(f"--methods {name} needs {' and '.join(needed)} as well: "
                             f"{name}'s runs are paired with theirs")


def built_in(args):
    return args.model in MODELS and args.dataset in data.DATASETS


def default_budgets(args, shape):
    """A built-in model on a built-in data set: the committed budgets (else 5,000 and 20,000).
    Otherwise 1/2, 1/4 and 1/8 of the model's size at width 1, those every method can reach
    within 10 % (the rest named in a line)."""
    if built_in(args):
        return DEFAULT_BUDGETS.get((args.dataset, args.model), [5000, 20000])
    full = count_parameters(models.model_factory(args.model)(width=1.0, **shape))
    budgets, left_out = [], []
    for fraction in FRACTIONS:
        budget = full // fraction
        try:
            for name in args.methods:
                width_for(args, BY_NAME[name], budget, shape)
            budgets.append(budget)
        except ValueError:
            left_out.append(f"1/{fraction} ({budget:,}: {name} cannot reach it within 10 %)")
    if left_out:
        print(f"budgets left out: {'; '.join(left_out)}")
    if not budgets:
        raise UsageError(f"--model {args.model}: no default budget ({full:,} parameters at width 1, halved, "
                         "quartered, eighthed) is reachable by every method; give --budgets")
    return budgets


def data_checked(args):
    """The data, once every method is known to meet every budget (a budget some method cannot
    meet fails now, not mid-sweep)."""
    models.model_factory(args.model)  # a --model that cannot be imported: one line, now
    splits = data.load(args.dataset, args.data_dir, args.image_size)
    shape = models.data_shape(splits)
    args.budgets = args.budgets or default_budgets(args, shape)
    for budget in args.budgets:
        for name in args.methods:
            try:
                width_for(args, BY_NAME[name], budget, shape)
            except ValueError as e:
                raise UsageError(f"--budgets {budget}: {name} cannot have {budget:,} parameters with "
                                 f"{args.model}: {e}") from None
    return splits


def resolve_defaults(args):
    """The defaults that depend on the recipe, the data and the model; flags that do not go
    together refused."""
    user = not built_in(args)  # your model or your images: the defaults the verdict recommends
    args.recipe = args.recipe or ("strong" if user else "default")
    strong = args.recipe == "strong"
    args.methods = args.methods or list(USER_METHODS if user else STRONG_METHODS if strong else
                                        (m.name for m in METHODS))
    # --minutes sizes what is not given (main, once the model has been timed on the data)
    args.minutes = args.minutes or (USER_MINUTES if user and strong else None)
    args.given = {k: getattr(args, k) for k in ("trials", "seeds", "search_images")}
    args.trials = args.trials or (12 if strong else 8)
    args.seeds = args.seeds or 3
    args.search_epochs = args.search_epochs or args.schedule_epochs
    if strong:
        args.quantize = "int8"  # every final model, for its bytes and accuracy in int8
        other = [name for name in args.methods if name not in STRONG_METHODS]
        if other:
            raise UsageError(f"--recipe strong: {', '.join(other)} train with a library recipe of their own; "
                             f"choose from {', '.join(STRONG_METHODS)}")
        if args.epochs < budget_epochs(args):
            raise UsageError(f"--epochs {args.epochs}: a dendritic run takes {budget_epochs(args)} "
                             f"({args.max_dendrites + 1} schedules of {args.schedule_epochs}); raise it")
    elif args.search_images or args.time_inference or args.minutes:
        flag = "search-images" if args.search_images else "time-inference" if args.time_inference else "minutes"
        raise UsageError(f"--{flag}: only with --recipe strong")
    check_methods(args.methods)
    args.wide = args.wide or (DEFAULT_WIDE.get((args.dataset, args.model), DEFAULT_WIDE.get(args.dataset, 0.25))
                              if built_in(args) else 1.0)


# ---------------------------------------------------------------- the plan, before the first run

def planned(args, shape, n_train):
    """Every run the study trains, as plan.Run: the search trials and seeds of each method at each
    budget, and the wide model's seeds. Epochs are --recipe strong's (fixed); otherwise None."""
    strong = args.recipe == "strong"
    full, search = (budget_epochs(args), budget_epochs(args, search=True)) if strong else (None, None)
    images = min(args.search_images or n_train, n_train)
    runs = []
    for budget in args.budgets:
        for method in (BY_NAME[n] for n in args.methods):
            pace = BY_NAME["plain"] if method.wide == "--prune-from" else method  # pruned: the budget's size
            factor = (plan.DENDRITE_FACTOR if not method.plain else
                      plan.DISTIL_FACTOR if method.wide == "--teacher" else 1.0)
            width = width_for(args, pace, budget, shape)
            dendritic = not method.plain
            if method.control is None:
                runs += [plan.Run("search", method.name, budget, width, search, images, factor, dendritic)
                         ] * search_trials(args, method)
            runs += [plan.Run("seeds", method.name, budget, width, full, n_train, factor, dendritic)] * args.seeds
    if any(BY_NAME[n].wide for n in args.methods):
        runs += [plan.Run("wide", "wide", None, args.wide, full, n_train)] * (args.seeds + 1)
    return runs


def key(run):
    return run.stage, run.method, run.budget


def done_already(args, url, runs):
    """How many runs of each (stage, method, budget) the storage holds finished already."""
    done = {}
    for k in dict.fromkeys(map(key, runs)):
        stage, method, budget = k
        name = study_name(args, "wide") if stage == "wide" else study_name(args, stage, BY_NAME[method], budget)
        done[k] = len(studies.finished(studies.open_study(url, name))) if studies.study_exists(url, name) else 0
    return done


def size(args, url, splits, shape, rates):
    """--minutes: trials, seeds and the search's images that fit, unless given; the first worker's
    choice is stored with the study, so that every worker and every restart trains the same plan."""
    n_train, evaluated = len(splits.train[1]), len(splits.val[1]) + len(splits.test[1])
    given = args.given

    def estimate(trials, seeds, share):
        images = given["search_images"] or (None if share == 1 else n_train // share)
        option = Namespace(**{**vars(args), "trials": trials, "seeds": seeds, "search_images": images})
        return sum(plan.seconds(run, rates, evaluated) for run in planned(option, shape, n_train))

    store = studies.open_study(url, study_name(args, "plan"))
    if "sized" not in store.user_attrs:
        (trials, seeds, share), cost, fits = plan.fit_ladder(estimate, args.minutes, given["trials"], given["seeds"])
        images = given["search_images"] or (None if share == 1 else n_train // share)
        store.set_user_attr("sized", {"trials": trials, "seeds": seeds, "search_images": images, "minutes": args.minutes})
        cut = [f"{trials} search trials a method (of {LADDER_TOP[0]})" if not given["trials"] else "",
               f"{seeds} seeds (of {LADDER_TOP[1]})" if not given["seeds"] and seeds < LADDER_TOP[1] else "",
               f"the search on {images:,} of {n_train:,} training images" if images and not given["search_images"]
               else ""]
        print(f"--minutes {args.minutes:g}: " + ", ".join(c for c in cut if c)
              + ("" if fits else f"; the smallest plan still takes about {plan.minutes(cost)} minutes"))
    sized = store.user_attrs["sized"]
    for k in ("trials", "seeds", "search_images"):
        if given[k] is not None and given[k] != sized[k]:
            raise UsageError(f"this study was sized with --{k.replace('_', '-')} {sized[k]}; give the same, "
                             "or use another --results folder")
        setattr(args, k, sized[k])


LADDER_TOP = plan.LADDER[0][:2]


def plan_first(args, url, splits, shape):
    """Before the first run: size the study to --minutes, print what it will train (per stage and
    in all, with the minutes expected from a timing of the model on the data), and return the
    progress that each finished run reports to."""
    strong = args.recipe == "strong"
    rates = None
    if strong:
        started = time.perf_counter()
        widths = {run.width for run in planned(args, shape, len(splits.train[1]))}
        rates = plan.measure_rates(args.model, splits, widths, args.recipe)
        timing = time.perf_counter() - started
        if args.minutes:
            size(args, url, splits, shape, rates)
    runs = planned(args, shape, len(splits.train[1]))
    done = done_already(args, url, runs)
    evaluated = len(splits.val[1]) + len(splits.test[1])
    remaining, lines = [], []
    for k in dict.fromkeys(map(key, runs)):
        group = [run for run in runs if key(run) == k]
        left = max(0, len(group) - done[k])
        remaining += [(k, plan.seconds(group[0], rates, evaluated) if strong else 0.0)] * left
        stage, method, budget = k
        what = "the wide model, seeds 0-" + str(args.seeds) if budget is None else f"{method} at {budget:,}"
        cost = f", about {plan.minutes(left * remaining[-1][1])} min" if strong and left else ""
        lines.append(f"  {stage:<6} {what:<30} {len(group):>3} runs" + (f", {done[k]} done" if done[k] else "") + cost)
    total = sum(e for _, e in remaining)
    print(f"plan: {len(args.methods)} methods ({', '.join(args.methods)}) at {len(args.budgets)} budgets, "
          f"{args.trials} search trial(s) a method, {args.seeds} seeds, the {args.recipe} recipe, "
          f"{len(splits.train[1]):,} training images:")
    print("\n".join(lines))
    estimate = (f"about {plan.minutes(total)} minutes on this machine (from a {timing:.0f}-second timing of "
                f"{args.model} on these images at each width; the estimate is corrected as runs finish)"
                if strong else "minutes not estimated: early stopping decides each run's epochs")
    print(f"in all: {len(remaining)} runs to train of {len(runs)}, {estimate}. Stop it at any time (Ctrl-C) and "
          "run the same command again to continue where it stopped.", flush=True)
    return plan.Progress(remaining)


def main(args):
    resolve_defaults(args)
    args.report_only = args.report_only or args.time_inference or bool(args.fit)  # these train nothing
    results_dir, runs = folders(args)
    # A report of a built-in model and data set reads the records only (no data needed).
    splits = None if args.report_only and built_in(args) else data_checked(args)
    shape = splits and models.data_shape(splits)
    args.budgets = args.budgets or default_budgets(args, shape)  # the same in a report as in the training
    results_dir.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///{results_dir / 'sweep.db'}"
    # Whether the model has dropout to tune does not depend on the data's shape.
    model = models.model_factory(args.model)(**(shape or dict(in_channels=1, image_size=8, num_classes=10)),
                                             width=1.0)
    args.model_has_dropout = any(isinstance(m, nn.Dropout) for m in model.modules())
    name = f"shrink-{models.label(args.model)}" + ("-strong" if args.recipe == "strong" else "")
    # the strong verdict's final models and wide models, kept next to their records
    args.kept = results_dir / f"{name}-models" if args.recipe == "strong" else None
    args.progress = None if args.report_only else plan_first(args, url, splits, shape)

    # Every budget's methods that need no wide model first, then the wide model and the methods
    # that start from it: a sweep stopped part-way has the central comparison at every budget.
    results = {budget: run_budget(args, url, budget, shape, {}, runs) for budget in args.budgets}
    needs_wide = any(BY_NAME[n].wide for n in args.methods)
    wide_runs, wide_records = train_wide(args, url, runs) if needs_wide else ({}, [])
    if wide_runs:
        results = {budget: run_budget(args, url, budget, shape, wide_runs, runs, results[budget])
                   for budget in args.budgets}
    rows = verdict_rows(args, results, wide_records)
    if not rows:
        print("nothing stored to report yet")
        return None
    splits = splits or data.load(args.dataset, args.data_dir, args.image_size)
    if args.recipe == "strong":
        verdict.keep([r for row in rows for r in row["records"]], args.kept, verdict.SEED_FILES)
    if args.fit:
        return ship_fit(args, rows, splits, results_dir, name)
    if args.time_inference:  # the test images, as every run's own timing used
        verdict.time_inference(rows, splits.test[0], results_dir / f"{name}-latency.json", args.kept)
    shipped = deploy.winners(rows, splits, args.kept, verdict.read_latency(results_dir / f"{name}-latency.json"),
                             results_dir / "deploy" / name, name, args.seeds)
    answer = deploy.answer(rows, shipped, f"{args.dataset}, {args.model}", results_dir)
    if args.recipe == "strong":
        report = verdict.write(args, rows, wide_records, results_dir, name, answer)
        print("\n" + report)
        print(f"wrote {results_dir}/{name}.md, {name}.csv, {name}.png, {name}-budgets.png")
    else:
        report = answer + "\n" + table(args, rows, wide_records)
        (results_dir / f"{name}.md").write_text(report)
        write_csv(rows, results_dir / f"{name}.csv")
        plot(args, rows, results_dir / f"{name}.png")
        print("\n" + report)
        print(f"wrote {results_dir}/{name}.md, {name}.csv, {name}.png")
    print("\n" + answer)  # last, for whoever asked the question
    return rows


def ship_fit(args, rows, splits, results_dir, name):
    latency = verdict.read_latency(results_dir / f"{name}-latency.json")
    found = deploy.fit(rows, splits, args.kept, latency, results_dir / "deploy" / name, name, args.fit)
    if found is None:
        raise UsageError(f"--fit: no model of {name} is within {deploy.describe(args.fit)}")
    folder, text = found
    print(text + f"\nwrote {folder}/")
    return rows


if __name__ == "__main__":
    cli(main, get_args_parser)
