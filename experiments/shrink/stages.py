"""The studies of experiments.shrink, driven: each method's search and seeds at a budget, the
wide model, and the pairing of every plain method's runs with the dendritic runs of the same
seed. command.py holds the command and its defaults; methods.py what
each method trains."""

import argparse
import time
from pathlib import Path

import optuna

from experiments.common import kept_runs, spaces, studies
from experiments.common.runner import check_settings, check_stored, run_cell
from experiments.shrink.methods import (BY_NAME, WIDE, budget_epochs, overrides, search_trials, strong_overrides,
                                 study_name, suggest, width_for, without_repeats)
from neuroshrink.flags import positive


def open_study(args, url, name, sampler=None, defining=None):
    """`defining`: the study options its runs depend on (default: all of them)."""
    if args.report_only and not studies.study_exists(url, name):
        return None  # nothing there: report, but leave the storage as it is
    study = studies.open_study(url, name, args.heartbeat, sampler=sampler)
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


def train_wide(args, url, runs):
    """The wide plain model, seeds 0..S: what pruning starts from and distillation learns from."""
    # its runs depend on the schedule alone (not on any search's options): every study shares it
    study = open_study(args, url, study_name(args, "wide"), defining=("schedule_epochs",))
    if study is None:
        return {}, []

    epochs = budget_epochs(args) if args.recipe == "strong" else 1

    def train(cell):
        print(f"\n=== wide {args.model} width {args.wide:g} seed {cell['seed']}", flush=True)
        changes = strong_overrides(args, WIDE, epochs, search=False) if args.recipe == "strong" else {}
        record = trained(args, ("wide", "wide", None), cell, runs / study.study_name / f"s{cell['seed']}",
                         no_dendrites=True, **changes)
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


def trained(args, key, cell, run_dir, **changes):
    """run_cell, its time given to the study's progress (key: stage, method, budget)."""
    started = time.perf_counter()
    record = run_cell(args, cell, run_dir, **changes)
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
        hp = suggest(trial, method, args.model_has_dropout, args.recipe == "strong", args.allow_zero_decay,
                     args.layouts.get(budget))
        print(f"\n=== search {study.study_name} {name}: {hp}", flush=True)
        epochs = budget_epochs(args, search=True, hp=hp) if args.recipe == "strong" else 1
        cell = {"width": width_for(args, method, budget, shape, hp), "method": method.name, "seed": 0,
                "min_epochs": epochs}
        record = trained(args, ("search", method.name, budget), cell, runs / study.study_name / name,
                         **overrides(args, method, budget, hp, 0, wide_runs, epochs, search=True))
        record = {key: value for key, value in record.items() if key != "test_acc"} | {"hp": hp}  # never seen
        return record["val_acc"], record
    studies.search(study, trials, train, poll=studies.poll_seconds(args.heartbeat))
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


def train_seeds(args, url, method, budget, shape, hp, paired, wide_runs, runs, wait=True):
    """Seeds 1..S of the chosen configuration; a paired method's seed s waits for the paired
    dendritic run of seed s, and trains at least its epochs (a control: with its restarts).
    Without `wait`, returns once no seed is left to start, while other workers train theirs."""
    study = open_study(args, url, study_name(args, "seeds", method, budget))
    if study is None or args.report_only:
        return study
    seeds, width = range(1, args.seeds + 1), width_for(args, method, budget, shape, hp)

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
        record = trained(args, ("seeds", method.name, budget), cell, runs / study.study_name / f"s{cell['seed']}",
                         **changes)
        if args.kept:
            kept_runs.keep([record], args.kept, kept_runs.SEED_FILES)
        return record["val_acc"], record | {"hp": hp}
    studies.work(study, cells_for, train, poll=studies.poll_seconds(args.heartbeat), wait=wait)
    return study


def every_budget(args, url, shape, runs, wide_runs=None, before=None):
    """run_budget at every budget, twice: first training only what is ready to start, so that a
    worker moves on (to the seed that pairs with a finished one, to the next budget) instead of
    idling while another worker trains a study's last seed; then waiting for those. A report
    reads what is there: one pass."""
    for wait in (True,) if args.report_only else (False, True):
        results = {budget: run_budget(args, url, budget, shape, wide_runs or {}, runs, (before or {}).get(budget),
                                      wait) for budget in args.budgets}
    return results


def run_budget(args, url, budget, shape, wide_runs, runs, before=None, wait=True):
    """The methods at one budget, dendritic methods first (the others pair with their seeds):
    without `wide_runs` those that do not start from the wide model, with it those that do
    (`before`: the others' results, to pair with). Returns {method name: (its seed records,
    the accuracy of its undecided search or None)}, `before` included. Searches always wait
    for their last trial (the seeds train what it chose); seeds only with `wait`."""
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
            hp = spaces.control(hp)
        paired = results.get(method.paired, ([], None))[0]
        study = train_seeds(args, url, method, budget, shape, hp, paired, wide_runs, runs, wait)
        if study is not None:
            results[method.name] = studies.records(study), undecided[method.control or method.name]
    return results


def best_trials(args, url):
    """{(method, budget): (the number of the trial its search chose, of how many)} of every searched
    dendritic method: whether the search's best was still moving near its end."""
    found = {}
    for budget in args.budgets:
        for method in (BY_NAME[n] for n in args.methods if not (BY_NAME[n].plain or BY_NAME[n].control)):
            name = study_name(args, "search", method, budget)
            if studies.study_exists(url, name):
                study = studies.open_study(url, name, args.heartbeat)
                counted = studies.finished(study)[:study.user_attrs.get("trials", args.trials)]
                if counted:
                    found[method.name, budget] = (max(range(len(counted)), key=lambda i: counted[i].value) + 1,
                                                  len(counted))
    return found
