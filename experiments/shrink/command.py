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
and the methods dendritic, matched, plain and pruned; a model of fixed widths (torchvision:NAME,
a class of no arguments) meets each budget narrowed, every layer keeping the same fraction of its
channels (docs/own-model.md); --minutes (default 15) sizes the search
trials, seeds and the search's images to fit, from a timing of the model on the data, and the
plan (runs per stage, minutes expected) is printed before the first run, progress after each.

Every study ends with the answer in words (also on top of its report): per budget, whether the
dendrites beat their control beyond the seeds' spread, the method to use (by validation), and
its best-validation seed shipped self-contained to results/<dataset>/deploy/<study>/<budget>/
(experiments/common/deploy.py; --fit 30kB 0.05ms ships what fits a device instead).

Like the width sweep it is a worker of studies in an Optuna storage (results/<dataset>/sweep.db
by default): stop and start it at will, or start several. Outputs in results/<dataset>/:
shrink-<model>.md (the answer, then the tables: every method and its int8 copy in accuracy, kB and
milliseconds), shrink-<model>.csv, shrink-<model>.png and -budgets.png (experiments/shrink/report.py:
one report for either recipe).
"""

import argparse

from experiments.common import deploy, kept_runs, spaces, studies
from experiments.common.runner import common_parser, folders
from experiments.shrink import plan, report
from experiments.shrink.methods import (BY_NAME, DEFAULT_METHODS, DENDRITIC_STUDENT, METHODS, STRONG_ALLOWED, STRONG_METHODS,
                                 USER_METHODS, budget_epochs, check_methods, layouts, study_name, width_for)
from experiments.shrink.stages import (SCHEDULE_EPOCHS, add_study_options, best_trials, in_order, search_method,
                                      train_seeds, train_wide)
from model import MODELS, count_parameters
from neuroshrink import build, data
from neuroshrink.config import QUICK
from neuroshrink.errors import UsageError
from neuroshrink.flags import positive
from neuroshrink.records import BEFORE_IT_EXISTED

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
    p.set_defaults(epochs=100, max_dendrites=1, recipe=None, seeds=None)  # with_defaults: by model and data
    p.add_argument("--budgets", type=positive(int), nargs="+", default=None,
                   help="parameter budgets, trained in this order (default: digits 1000 3658 13706 300 50000, "
                        "with rescnn 3658 13706 50000; fashion-mnist 5500 19000; otherwise 1/2, 1/4 and 1/8 "
                        "of the model's parameters at width 1, those every method can reach)")
    p.add_argument("--wide", type=positive(float), default=None,
                   help="width of the wide plain model that is pruned and distilled from "
                        "(default: digits 2, fashion-mnist 0.25, with compact 1, for the built-in models; "
                        "otherwise 1)")
    p.add_argument("--methods", nargs="+", default=None, choices=[m.name for m in METHODS],
                   metavar="METHOD", help=f"which methods ({', '.join(m.name for m in METHODS)}; default: all but "
                                          f"{' and '.join(DENDRITIC_STUDENT)}, --recipe strong: "
                                          f"{', '.join(STRONG_METHODS)})")
    p.add_argument("--minutes", type=positive(float), default=None, metavar="M",
                   help="--recipe strong: size the search trials, seeds and the search's training images (and, "
                        "where nothing else fits, the schedule's epochs) to fit M minutes on this machine, by a timing "
                        f"of the model on the data (default for your model or images: {USER_MINUTES}; --trials, "
                        "--seeds, --search-images and --schedule-epochs given stay as given)")
    add_study_options(p)
    p.add_argument("--maintainer", action="store_true",
                   help="--recipe strong: the dendritic searches also draw what the library's maintainer sets "
                        "(where the dendrites go and how many sets, within the budget; the learning rate after a "
                        "restructure, 1 or 10x; the plateau before a switch), in studies of their own "
                        "(shrink-<model>-strong-maintainer.*); the wide model is shared")
    p.add_argument("--fit", type=deploy.limit, nargs="+", default=None, metavar="LIMIT",
                   help="no training: of every seed run's fp32 and int8 model, ship the most accurate on validation "
                        "whose file and one-thread batch-1 latency fit, e.g. --fit 30kB 0.05ms "
                        "(to <results>/<dataset>/deploy/<study>/fit-<limits>/)")
    p.add_argument("--time-inference", action="store_true",
                   help="--recipe strong, no training: time every final model (fp32 and int8; from its run folder, "
                        "else the copy kept with the records) in ONNX Runtime on one thread, one after another, "
                        "into shrink-<model>-strong-latency.json; nothing else may run meanwhile")
    return p


def built_in(args):
    return args.model in MODELS and args.dataset in data.DATASETS


def default_budgets(args, shape):
    """A built-in model on a built-in data set: the committed budgets (else 5,000 and 20,000).
    Otherwise 1/2, 1/4 and 1/8 of the model's size at width 1, those every method can reach
    within 10 % (the rest named in a line)."""
    if built_in(args):
        return DEFAULT_BUDGETS.get((args.dataset, args.model), [5000, 20000])
    full = count_parameters(build.model_factory(args.model)(width=1.0, **shape))
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


class Study(argparse.Namespace):
    """A shrink study as its command line asks for it, settled once before anything trains
    (resolve): every option, the defaults that depend on the recipe, the data and the model,
    its budgets, dendrite layouts, storage, precision and plan. Read-only from then on."""

    def __init__(self, **fields):
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"a resolved study is read-only: {name}")

    def but(self, **changes):
        return Study(**vars(self) | changes)


def with_defaults(args):
    """The command line with the defaults that depend on the recipe, the data and the model;
    flags that do not go together refused."""
    user = not built_in(args)  # your model or your images: the defaults the verdict recommends
    recipe = args.recipe or ("strong" if user else "default")
    strong = recipe == "strong"
    study = Study(**vars(args)).but(
        recipe=recipe,
        methods=args.methods or list(USER_METHODS if user else STRONG_METHODS if strong else DEFAULT_METHODS),
        # --minutes sizes what is not given (resolve, once the model has been timed on the data)
        minutes=args.minutes or (USER_MINUTES if user and strong else None),
        given={k: getattr(args, k) for k in ("trials", "seeds", "search_images", "schedule_epochs", "search_epochs")},
        trials=args.trials or (12 if strong else 8), seeds=args.seeds or 3,
        schedule_epochs=args.schedule_epochs or SCHEDULE_EPOCHS,
        search_epochs=args.search_epochs or args.schedule_epochs or SCHEDULE_EPOCHS,
        quantize="int8" if strong else args.quantize,  # every final model, for its bytes and accuracy in int8
        wide=args.wide or (DEFAULT_WIDE.get((args.dataset, args.model), DEFAULT_WIDE.get(args.dataset, 0.25))
                           if built_in(args) else 1.0))
    if strong:
        other = [name for name in study.methods if name not in STRONG_ALLOWED]
        if other:
            raise UsageError(f"--recipe strong: {', '.join(other)} train with a library recipe of their own; "
                             f"choose from {', '.join(STRONG_ALLOWED)}")
        if study.epochs < budget_epochs(study):
            raise UsageError(f"--epochs {study.epochs}: a dendritic run takes {budget_epochs(study)} "
                             f"({study.max_dendrites + 1} schedules of {study.schedule_epochs}); raise it")
    elif study.search_images or study.time_inference or study.minutes or study.maintainer:
        flag = ("search-images" if study.search_images else "time-inference" if study.time_inference else
                "minutes" if study.minutes else "maintainer")
        raise UsageError(f"--{flag}: only with --recipe strong")
    check_methods(study.methods)
    return study


def checked_budgets(study, shape):
    """--budgets or the defaults, once every method is known to meet every one (a budget some
    method cannot meet fails now, not mid-sweep)."""
    budgets = study.budgets or default_budgets(study, shape)
    for budget in budgets if shape else ():
        for name in study.methods:
            try:
                width_for(study, BY_NAME[name], budget, shape)
            except ValueError as e:
                raise UsageError(f"--budgets {budget}: {name} cannot have {budget:,} parameters with "
                                 f"{study.model}: {e}") from None
    return budgets


def stored_precision(study):
    """The precision the first of the study's studies that holds runs trained in (a sweep
    continues in its own: the committed ones trained in fp32); None for a new one."""
    for name in [study_name(study, "wide")] + [study_name(study, stage, BY_NAME[m], b) for b in study.budgets
                                              for m in study.methods for stage in ("search", "seeds")]:
        stored = studies.study_exists(study.url, name) and studies.open_study(study.url, name).user_attrs.get("sweep")
        if stored:
            return stored.get("precision", BEFORE_IT_EXISTED["precision"])
    return None


def resolve(args):
    """The Study the command line asks for, and the data (None for a report of a built-in
    model and data set, which reads the records only); training, its plan sized to --minutes
    and printed, and the progress that each finished run reports to."""
    study = with_defaults(args)
    report_only = study.report_only or study.time_inference or bool(study.fit)  # these train nothing
    build.model_factory(study.model)  # a --model that cannot be imported: one line, now
    splits = None if report_only and built_in(study) else data.load(study.dataset, study.data_dir, study.image_size,
                                                                      build.reading_of(study))
    shape = splits and build.data_shape(splits)
    results_dir, runs = folders(study)
    # Whether the model has dropout to tune does not depend on the data's shape.
    model = build.model_factory(study.model)(**(shape or dict(in_channels=1, image_size=8, num_classes=10)),
                                              width=1.0)
    strong = study.recipe == "strong"
    wide_name = f"shrink-{build.label(study.model)}" + ("-strong" if strong else "")
    name = wide_name + ("-maintainer" if study.maintainer else "")
    budgets = checked_budgets(study, shape)  # the same in a report as in the training
    study = study.but(
        report_only=report_only, results_dir=results_dir, runs_dir=runs, name=name, budgets=budgets, shape=shape,
        url=study.storage or f"sqlite:///{results_dir / 'sweep.db'}",
        model_has_dropout=bool(build.dropout_layers(model)),
        # the strong verdict's final models and wide models, kept next to their records
        kept=results_dir / f"{name}-models" if strong else None,
        kept_wide=results_dir / f"{wide_name}-models" if strong else None,  # shared
        # --maintainer: the layouts each budget's dendritic search draws from, said before it starts
        layouts={budget: layouts(study, budget, shape) for budget in budgets} if study.maintainer and shape else {},
        progress=None)
    results_dir.mkdir(parents=True, exist_ok=True)
    stored = None if report_only else stored_precision(study)  # (a report checks no settings)
    if not report_only:  # a study continues in its own precision (--precision auto: whatever it chose)
        study = study.but(precision=stored if stored and study.precision in (None, "auto") else study.precision or "auto")
    for budget, found in study.layouts.items():
        print(f"--maintainer, {budget:,} parameters: dendrite layouts within the budget: {', '.join(found)}")
    if not report_only:  # a new study with --precision auto trains every run in the one its plan chooses
        sized, progress = plan.plan_first(study, study.url, splits, shape, stored is None and study.precision == "auto")
        study = study.but(**sized, progress=progress)
    return study, splits


def main(args):
    """The study: every method's search and seeds at every budget, then its report and answer."""
    study, splits = resolve(args)
    results, chosen, wide_runs, wide_records = {budget: {} for budget in study.budgets}, {}, {}, []
    with data.held(splits, study.dataset, study.data_dir, study.image_size, build.reading_of(study)):  # read once
        # Every budget's methods that need no wide model first, then the wide model and the methods
        # that start from it: a sweep stopped part-way has the central comparison at every budget.
        for wide in (False, True) if any(BY_NAME[n].wide for n in study.methods) else (False,):
            if wide:
                wide_runs, wide_records = train_wide(study)
                if not wide_runs:
                    break
            # First what is ready to start, so that a worker moves on (to the seed that pairs with a
            # finished one, to the next budget) instead of idling while another worker trains a
            # study's last seed; then waiting for those. A report reads what is there: one pass.
            for wait in (True,) if study.report_only else (False, True):
                for budget in study.budgets:
                    for method in in_order(study, wide):
                        if method.control is None:  # a control takes its plain recipe's choice (matched: dendritic's)
                            chosen[method.name, budget] = search_method(study, method, budget, wide_runs)
                        hp, undecided = chosen.get((method.control or method.name, budget), (None, None))
                        if hp is None:  # that search has not run yet
                            continue
                        if method.plain:  # matched: the dendritic search's choice, less what only dendrites have
                            hp = spaces.control(hp)
                        paired = results[budget].get(method.paired, ([], None))[0]
                        records = train_seeds(study, method, budget, hp, paired, wide_runs, wait)
                        if records is not None:
                            results[budget][method.name] = records, undecided
    return answered(study, splits, results, wide_records)


def answered(study, splits, results, wide_records):
    """The study's report from its records: the answer in words, the tables and plots, each
    budget's winner shipped (or with --fit the model that fits); returns its rows."""
    results_dir, name = study.results_dir, study.name
    rows = report.method_rows(study, results, wide_records)
    if not rows:
        print("nothing stored to report yet")
        return None
    splits = splits or data.load(study.dataset, study.data_dir, study.image_size, build.reading_of(study))
    if study.quick:  # the images its runs validated and tested on (build.splits_of), for the winners' scores
        splits = data.subset(splits, QUICK["n_train"], QUICK["n_eval"])
    if study.recipe == "strong":
        kept_runs.keep([r for row in rows for r in row["records"]], study.kept, kept_runs.SEED_FILES)
    if study.fit:
        return ship_fit(study, rows, splits, results_dir, name)
    if study.time_inference:  # the test images, as every run's own timing used
        kept_runs.time_inference(rows, splits, results_dir / f"{name}-latency.json", study.kept)
    shipped = deploy.winners(rows, splits, study.kept, kept_runs.read_latency(results_dir / f"{name}-latency.json"),
                             results_dir / "deploy" / name, name, study.seeds)
    answer = deploy.answer(rows, shipped, f"{study.dataset}, {study.model}", results_dir)
    searched = best_trials(study) if study.maintainer else {}
    text, written = report.write(study, rows, wide_records, results_dir, name, answer, searched)
    print("\n" + text + f"\nwrote {results_dir}/{', '.join(written)}")
    print("\n" + answer)  # last, for whoever asked the question
    return rows


def ship_fit(args, rows, splits, results_dir, name):
    latency = kept_runs.read_latency(results_dir / f"{name}-latency.json")
    found = deploy.fit(rows, splits, args.kept, latency, results_dir / "deploy" / name, name, args.fit)
    if found is None:
        raise UsageError(f"--fit: no model of {name} is within {deploy.describe(args.fit)}")
    folder, text = found
    print(text + f"\nwrote {folder}/")
    return rows
