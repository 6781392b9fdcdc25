"""The studies of experiments.shrink, driven: each method's search and seeds at a budget, the
wide model, and the pairing of every plain method's runs with the dendritic runs of the same
seed. command.py holds the command and its defaults; methods.py what
each method trains."""

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


def train_wide(study):
    """The wide plain model, seeds 0..S: what pruning starts from and distillation learns from.
    Returns ({seed: its run folder}, its records)."""
    # its runs depend on the schedule alone (not on any search's options): every study shares it
    found = open_study(study, study_name(study, "wide"), defining=("schedule_epochs",))
    if found is None:
        return {}, []
    epochs = budget_epochs(study) if study.recipe == "strong" else 1

    def train(cell):
        print(f"\n=== wide {study.model} width {study.wide:g} seed {cell['seed']}", flush=True)
        changes = strong_overrides(study, WIDE, epochs, search=False) if study.recipe == "strong" else {}
        run_dir = study.runs_dir / found.study_name / f"s{cell['seed']}"
        with timed(study, ("wide", "wide", None)):
            config = cell_config(study, cell, no_dendrites=True, **changes)
            record = cell_record(study, cell, run_dir, run_in(config, run_dir))
        if study.kept_wide:
            kept_runs.keep([record], study.kept_wide, kept_runs.WIDE_FILES)
        return record["val_acc"], record
    cells = [{"width": study.wide, "method": "wide", "seed": s, "min_epochs": epochs} for s in range(study.seeds + 1)]
    if not study.report_only:
        studies.work(found, lambda records: cells, train, poll=studies.poll_seconds(study.heartbeat))
    records = studies.records(found)
    if not study.kept_wide or study.report_only:  # a report needs the wide model's records only
        return {r["seed"]: Path(r["run"]) for r in records}, records
    kept_runs.keep(records, study.kept_wide, kept_runs.WIDE_FILES)
    # its own run folder, or (trained on another machine) the copy kept with the records
    return {r["seed"]: kept_runs.run_folder(r, study.kept_wide, kept_runs.WIDE_FILES) for r in records}, records


@contextlib.contextmanager
def timed(study, key):
    """The block's seconds given to the study's progress (key: stage, method, budget)."""
    started = time.perf_counter()
    yield
    if study.progress:
        study.progress.finished(key, time.perf_counter() - started)


def in_order(study, wide):
    """The study's methods that start from the wide model (`wide`) or those that do not,
    dendritic methods first: the plain ones pair with their seeds."""
    return [m for m in sorted((BY_NAME[n] for n in study.methods), key=lambda m: m.plain) if bool(m.wide) == wide]


def search_method(study, method, budget, wide_runs):
    """The method's search trials at the budget (seed 0, validation only), trained where
    missing; returns what it chose (chosen()), (None, None) where it has nothing yet."""
    size = without_repeats(study, method)
    with studies.quietly():  # "experimental"; it draws at random, never the same configuration twice
        sampler = optuna.samplers.BruteForceSampler(seed=spaces.SEARCH_SEED) if size else (
            studies.SeededTPE(random_trials=study.random_trials) if study.recipe == "strong" else None)
    found = open_study(study, study_name(study, "search", method, budget), sampler)
    if found is None:
        return None, None
    if study.report_only:
        return chosen(found)
    trials = search_trials(study, method)
    found.set_user_attr("trials", trials)

    def train(trial, name):
        hp = suggest(trial, method, study.model_has_dropout, study.recipe == "strong", study.allow_zero_decay,
                     study.layouts.get(budget))
        print(f"\n=== search {found.study_name} {name}: {hp}", flush=True)
        epochs = budget_epochs(study, search=True, hp=hp) if study.recipe == "strong" else 1
        cell = {"width": width_for(study, method, budget, study.shape, hp), "method": method.name, "seed": 0,
                "min_epochs": epochs}
        run_dir = study.runs_dir / found.study_name / name
        with timed(study, ("search", method.name, budget)):
            config = cell_config(study, cell, **overrides(study, method, budget, hp, 0, wide_runs, epochs, search=True))
            record = cell_record(study, cell, run_dir, run_in(config, run_dir))
        record = {key: value for key, value in record.items() if key != "test_acc"} | {"hp": hp}  # never seen
        return record["val_acc"], record
    studies.search(found, trials, train, poll=studies.poll_seconds(study.heartbeat))
    return chosen(found)


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


def train_seeds(study, method, budget, hp, paired, wide_runs, wait=True):
    """Seeds 1..S of the chosen configuration `hp`, trained where missing; returns their records
    (None where the study has none). A paired method's seed s waits for the paired dendritic
    run of seed s (`paired`: their records), and trains at least its epochs (a control: with
    its restarts). Without `wait`, returns once no seed is left to start, while other workers
    train theirs."""
    found = open_study(study, study_name(study, "seeds", method, budget))
    if found is None or study.report_only:
        return found and studies.records(found)
    seeds, width = range(1, study.seeds + 1), width_for(study, method, budget, study.shape, hp)

    def cells_for(records):
        if method.paired is None:
            return [{"width": width, "method": method.name, "seed": s, "min_epochs": 1} for s in seeds]
        by_seed = {r["seed"]: r for r in paired}
        return [{"width": width, "method": method.name, "seed": s, "min_epochs": by_seed[s]["epochs"],
                 **({"restart_at": by_seed[s]["restarts"], "lr_trace": by_seed[s]["lrs"]} if method.control else {})}
                for s in seeds if s in by_seed]

    def train(cell):
        print(f"\n=== {found.study_name} seed {cell['seed']}: {hp}", flush=True)
        changes = overrides(study, method, budget, hp, cell["seed"], wide_runs, cell["min_epochs"])
        if method.control:  # the paired dendritic run's restarts and learning rates
            changes |= {"lr_trace": tuple(cell["lr_trace"]), "restart_at": tuple(cell["restart_at"])}
        run_dir = study.runs_dir / found.study_name / f"s{cell['seed']}"
        with timed(study, ("seeds", method.name, budget)):
            config = cell_config(study, cell, **changes)
            record = cell_record(study, cell, run_dir, run_in(config, run_dir))
        if study.kept:
            kept_runs.keep([record], study.kept, kept_runs.SEED_FILES)
        return record["val_acc"], record | {"hp": hp}
    studies.work(found, cells_for, train, poll=studies.poll_seconds(study.heartbeat), wait=wait)
    return studies.records(found)


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
