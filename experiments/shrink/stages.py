"""The stages of experiments.shrink, each an Optuna study its workers share: a method's search
and its seeds at a budget, the wide model, and the pairing of every plain method's runs with
the dendritic runs of the same seed. `args` is the resolved, read-only Study (command.py);
`study` an Optuna study. methods.py says what each method trains."""

import argparse
import contextlib
import time
from pathlib import Path

import optuna

from experiments.common import kept_runs, spaces, studies
from experiments.common.runner import cell_config, cell_record, check_settings, check_stored, run_in
from experiments.shrink.methods import (BY_NAME, WIDE, budget_epochs, overrides, search_trials, strong_overrides,
                                 study_name, suggest, width_for, without_repeats)
from neuroshrink.flags import positive


def open_study(args, name, sampler=None, defining=None):
    """`defining`: the study options its runs depend on (default: all of them)."""
    if args.report_only and not studies.study_exists(args.url, name):
        return None  # nothing there: report, but leave the storage as it is
    study = studies.open_study(args.url, name, args.heartbeat, sampler=sampler)
    if not args.report_only:
        check_settings(study, args)
        if args.recipe == "strong":
            check_strong_settings(study, args, defining)
    return study


SCHEDULE_EPOCHS = 15  # a schedule's epochs, unless given (or cut to fit --minutes)


def add_study_options(parser):
    """The options of shrink's search and budgets. Every worker of a --recipe strong study must
    agree on them: the first stores them with the study (check_strong_settings)."""
    strong = parser.add_argument_group("the search and budgets (every worker of a --recipe strong study agrees)")
    strong.add_argument("--trials", type=positive(int), default=None,
                        help="search trials per method and budget, the same for every method (fewer only where a "
                             "method's space has fewer configurations; default 8, --recipe strong 12; your model or "
                             "images: as --minutes allows)")
    strong.add_argument("--schedule-epochs", type=positive(int), default=None, metavar="S",
                        help=f"each architecture's schedule: a dendritic run adds its set after S epochs and trains "
                             f"S more; every other run trains as many (default {SCHEDULE_EPOCHS}; your model or "
                             f"images: shorter only where --minutes allows no other plan)")
    strong.add_argument("--search-epochs", type=positive(int), default=None, metavar="S",
                        help="the search's schedule, the same for every method (default: --schedule-epochs)")
    strong.add_argument("--search-images", type=positive(int), default=None, metavar="N",
                        help="the search trains on the first N training images, every method (default: all)")
    strong.add_argument("--random-trials", type=positive(int), default=4, metavar="K",
                        help="the search's first K configurations are drawn at random, the rest by TPE")
    strong.add_argument("--allow-zero-decay", action="store_true",
                        help="the dendritic methods' search may also choose weight decay 0 (a coin, then the range; "
                             "the library's docs warn that weight decay can hurt dendrite learning); the others' "
                             "spaces stay")
    return parser


# their names and defaults (as resolved: with_defaults)
STRONG_DEFAULTS = vars(add_study_options(argparse.ArgumentParser()).parse_args([])) | {"schedule_epochs": SCHEDULE_EPOCHS}


def check_strong_settings(study, args, defining=None):
    """Every run of a --recipe strong study shares its budgets and its search's (or the options
    in `defining`): the first worker sets them."""
    # a study stored before an option existed ran with its default
    check_stored(study, "strong", {key: getattr(args, key) for key in defining or STRONG_DEFAULTS}, STRONG_DEFAULTS)


def train_wide(args):
    """The wide plain model, seeds 0..S: what pruning starts from and distillation learns from.
    Returns ({seed: its run folder}, its records)."""
    # its runs depend on the schedule alone (not on any search's options): every study shares it
    study = open_study(args, study_name(args, "wide"), defining=("schedule_epochs",))
    if study is None:
        return {}, []
    epochs = budget_epochs(args) if args.recipe == "strong" else 1

    def train(cell):
        print(f"\n=== wide {args.model} width {args.wide:g} seed {cell['seed']}", flush=True)
        changes = strong_overrides(args, WIDE, epochs, search=False) if args.recipe == "strong" else {}
        # a means, never reported in bytes or milliseconds nor shipped: its model.ts is what is read
        changes |= {"no_timing": True, "quantize": None}
        run_dir = args.runs_dir / study.study_name / f"s{cell['seed']}"
        with timed(args, ("wide", "wide", None)):
            config = cell_config(args, cell, no_dendrites=True, **changes)
            record = cell_record(args, cell, run_dir, run_in(config, run_dir))
        if args.kept_wide:
            kept_runs.keep([record], args.kept_wide, kept_runs.WIDE_FILES)
        return record["val_acc"], record
    cells = [{"width": args.wide, "method": "wide", "seed": s, "min_epochs": epochs} for s in range(args.seeds + 1)]
    if not args.report_only:
        studies.work(study, lambda records: cells, train, poll=studies.poll_seconds(args.heartbeat))
    records = studies.records(study)
    if not args.kept_wide or args.report_only:  # a report needs the wide model's records only
        return {r["seed"]: Path(r["run"]) for r in records}, records
    kept_runs.keep(records, args.kept_wide, kept_runs.WIDE_FILES)
    # its own run folder, or (trained on another machine) the copy kept with the records
    return {r["seed"]: kept_runs.run_folder(r, args.kept_wide, kept_runs.WIDE_FILES) for r in records}, records


@contextlib.contextmanager
def timed(args, key):
    """The block's seconds given to the study's progress (key: stage, method, budget)."""
    started = time.perf_counter()
    yield
    if args.progress:
        args.progress.finished(key, time.perf_counter() - started)


def in_order(args, wide):
    """The study's methods that start from the wide model (`wide`) or those that do not,
    dendritic methods first: the plain ones pair with their seeds."""
    return [m for m in sorted((BY_NAME[n] for n in args.methods), key=lambda m: m.plain) if bool(m.wide) == wide]


def search_method(args, method, budget, wide_runs):
    """The method's search trials at the budget (seed 0, validation only), trained where
    missing; returns what it chose (chosen()), (None, None) where it has nothing yet."""
    size = without_repeats(args, method)
    with studies.quietly():  # "experimental"; it draws at random, never the same configuration twice
        sampler = optuna.samplers.BruteForceSampler(seed=spaces.SEARCH_SEED) if size else (
            studies.SeededTPE(random_trials=args.random_trials) if args.recipe == "strong" else None)
    study = open_study(args, study_name(args, "search", method, budget), sampler)
    if study is None:
        return None, None
    if args.report_only:
        return chosen(study)
    trials = search_trials(args, method)
    study.set_user_attr("trials", trials)

    def train(trial, name):
        hp = suggest(trial, method, args.model_has_dropout, args.recipe == "strong", args.allow_zero_decay,
                     args.layouts.get(budget))
        print(f"\n=== search {study.study_name} {name}: {hp}", flush=True)
        epochs = budget_epochs(args, search=True, hp=hp) if args.recipe == "strong" else 1
        cell = {"width": width_for(args, method, budget, args.shape, hp), "method": method.name, "seed": 0,
                "min_epochs": epochs}
        run_dir = args.runs_dir / study.study_name / name
        with timed(args, ("search", method.name, budget)):
            config = cell_config(args, cell, **overrides(args, method, budget, hp, 0, wide_runs, epochs, search=True))
            record = cell_record(args, cell, run_dir, run_in(config, run_dir))
        record = {key: value for key, value in record.items() if key != "test_acc"} | {"hp": hp}  # never seen
        return record["val_acc"], record
    studies.search(study, trials, train, poll=studies.poll_seconds(args.heartbeat))
    return chosen(study)


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


def train_seeds(args, method, budget, hp, paired, wide_runs, wait=True):
    """Seeds 1..S of the chosen configuration `hp`, trained where missing; returns their records
    (None where the study has none). A paired method's seed s waits for the paired dendritic
    run of seed s (`paired`: their records), and trains at least its epochs (a control: with
    its restarts). Without `wait`, returns once no seed is left to start, while other workers
    train theirs."""
    study = open_study(args, study_name(args, "seeds", method, budget))
    if study is None or args.report_only:
        return study and studies.records(study)
    seeds, width = range(1, args.seeds + 1), width_for(args, method, budget, args.shape, hp)

    def cells_for(records):
        if method.paired is None:
            return [{"width": width, "method": method.name, "seed": s, "min_epochs": 1} for s in seeds]
        by_seed = {r["seed"]: r for r in paired}
        return [{"width": width, "method": method.name, "seed": s, "min_epochs": by_seed[s]["epochs"],
                 **({"restart_at": by_seed[s]["restarts"], "lr_trace": by_seed[s]["lrs"]} if method.control else {})}
                for s in seeds if s in by_seed]

    def train(cell):
        print(f"\n=== {study.study_name} seed {cell['seed']}: {hp}", flush=True)
        changes = overrides(args, method, budget, hp, cell["seed"], wide_runs, cell["min_epochs"])
        if method.control:  # the paired dendritic run's restarts and learning rates
            changes |= {"lr_trace": tuple(cell["lr_trace"]), "restart_at": tuple(cell["restart_at"])}
        run_dir = args.runs_dir / study.study_name / f"s{cell['seed']}"
        with timed(args, ("seeds", method.name, budget)):
            config = cell_config(args, cell, **changes)
            record = cell_record(args, cell, run_dir, run_in(config, run_dir))
        if args.kept:
            kept_runs.keep([record], args.kept, kept_runs.SEED_FILES)
        return record["val_acc"], record | {"hp": hp}
    studies.work(study, cells_for, train, poll=studies.poll_seconds(args.heartbeat), wait=wait)
    return studies.records(study)


def best_trials(args):
    """{(method, budget): (the number of the trial its search chose, of how many)} of every searched
    dendritic method: whether the search's best was still moving near its end."""
    found = {}
    for budget in args.budgets:
        for method in (BY_NAME[n] for n in args.methods if not (BY_NAME[n].plain or BY_NAME[n].control)):
            name = study_name(args, "search", method, budget)
            if studies.study_exists(args.url, name):
                study = studies.open_study(args.url, name, args.heartbeat)
                counted = studies.finished(study)[:study.user_attrs.get("trials", args.trials)]
                if counted:
                    found[method.name, budget] = (max(range(len(counted)), key=lambda i: counted[i].value) + 1,
                                                  len(counted))
    return found
