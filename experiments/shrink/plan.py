"""What a study will cost before it starts, a time budget, and its progress as it goes.

The cost model: a run costs its epochs, each its training images times the seconds one
training image takes at its model's width (a pruned model's at the wide model's: an upper bound)
and its evaluated images (validation; a dendritic run's graph also plots each epoch's test score)
times the seconds one evaluation takes, and the epoch's snapshot; then a final evaluation, and
fixed costs beside them (RUN_S; a seed's export EXPORT_S and EXPORT_S_PER_PARAM a weight, plus
its ONNX checks and int8 calibration, EXPORT_EVALS evaluations of validation and test; a
dendritic run's tracker and graph; a pruned run's pruning). The rates are measured here, on this
machine, on the user's model and images, in each precision the runs may train in: a few batches
of each width, timed, and a snapshot written (rates.py). A new study with `--precision
auto` trains every run in the one precision that makes the whole plan fastest
(`one_for_all`), chosen once and stored with it, so that no method trains in another
precision than the one it is compared with. A dendritic run trains its first schedule on the
model the library converted and its second with one dendrite set: both are timed, the library
converting the model and adding the set (its capacity test) in a folder deleted after: on a
model of many small layers the library's wrapping costs more than the set's arithmetic. A stage some of whose runs the storage holds
finished (a study continued) is estimated at their mean time instead. As runs finish, the
estimate of what is left is scaled by how far the finished runs were from their own estimates.
"""

import time
from argparse import Namespace
from dataclasses import dataclass

import torch

from experiments.common import studies
from experiments.common.spaces import SWITCH_PATIENCES
from experiments.shrink.methods import BY_NAME, budget_epochs, search_trials, study_name, width_for
from experiments.shrink.rates import measure_rates
from neuroshrink import precision
from neuroshrink.errors import UsageError

# Fixed seconds of a run beside its epochs (2-core AMD EPYC: a 52,000-parameter CNN, issue 47; the
# terms per parameter from ResNet-18's widths, 1.4 to 11.2 million parameters, issue 48):
RUN_S = 0.5         # set-up, its record
EXPORT_S = 0.5      # a seed run's model.ts, model.onnx and model.int8.onnx written
EXPORT_S_PER_PARAM = 3.5e-7  # ... their conversion and int8 quantization, per weight
EXPORT_EVALS = 4    # ... and checked: validation and test in ONNX Runtime on one thread, int8 calibration
DENDRITE_S = 0.7    # a dendritic run's: the library's tracker and its graph
# A wide model pruned down through every budget, largest first (1.2 s for the 52,000-parameter CNN, 8.7 s
# for ResNet-18, LAMP), its cost shared by the budgets (each goes on from the last: pruning.Pruning), and at
# a budget by its search's trials (they prune one wide model once) or paid by a seed:
PRUNE_S = 1.2
PRUNE_S_PER_PARAM = 6.7e-7  # ... per weight of the wide model (torch-pruning's steps)
DENDRITE_FACTOR = 1.5  # a dendritic run's epochs where not measured: half at the base width, half with one set (2x)
DISTIL_FACTOR = 1.3    # a distilled run's epochs: the wide teacher's forward pass on every batch

# Trials per method, seeds, the search's share of the training images and the schedule's epochs
# (None: --schedule-epochs), from the most certain answer to the cheapest: --minutes takes the
# first that fits. A shorter schedule comes last: every method trains less well, alike.
LADDER = [(8, 3, 1, None), (6, 3, 1, None), (4, 3, 1, None), (4, 3, 2, None), (4, 2, 2, None), (3, 2, 2, None),
          (2, 2, 2, None), (2, 2, 4, None), (1, 2, 4, None), (1, 2, 4, 12), (1, 2, 4, 10), (1, 2, 4, 8), (1, 2, 4, 6)]


@dataclass(frozen=True)
class Run:
    stage: str          # "search", "seeds" or "wide"
    method: str
    budget: int | None  # None: the wide model
    width: float        # the width whose training speed it has
    epochs: int
    images: int         # training images
    factor: float = 1.0  # on its epochs' cost
    dendritic: bool = False
    grows: bool = False  # its second schedule carries a dendrite set on its own width (Rate.grown)
    pruned: float = 0.0  # the share of a pruning it pays (PRUNE_S)
    pace: float | None = None  # the width whose speed it trains at, if not its own: a pruned model's, the wide
    # model's (it keeps a subset of that model's channels: pruned by importance, the early layers, which
    # cost the most per parameter, keep more than a uniformly narrowed model's; an upper bound)


def seconds(run, rates, val_images, test_images):
    size, pace = rates[run.width], rates[run.pace or run.width]
    train, evaluate = pace.train, pace.evaluate
    if run.grows:  # measured, else a set doubling the layers' work half the time
        train, evaluate = pace.grown or (DENDRITE_FACTOR * train, DENDRITE_FACTOR * evaluate)
    evaluated = val_images + test_images * run.dendritic  # each epoch
    # a search trial exports nothing; the wide model is not quantized (about half a seed's conversions and checks)
    exported = {"search": 0.0, "wide": 0.5}.get(run.stage, 1.0)
    return (RUN_S + DENDRITE_S * run.dendritic + (PRUNE_S + PRUNE_S_PER_PARAM * pace.params) * run.pruned
            + (EXPORT_S + EXPORT_S_PER_PARAM * size.params + EXPORT_EVALS * (val_images + test_images) * evaluate)
            * exported
            + run.epochs * (run.factor * (run.images * train + evaluated * evaluate) + size.checkpoint)
            + (val_images + test_images) * evaluate)


def fit_ladder(estimate, minutes, trials=None, seeds=None, schedule=None):
    """The first (trials, seeds, search share, schedule epochs) of LADDER, with --trials, --seeds
    and --schedule-epochs where given (a schedule of None: as given), whose estimate(...) in
    seconds fits `minutes`; else the cheapest. Returns it with its estimate and whether it fits."""
    options = list(dict.fromkeys((trials or t, seeds or s, share, schedule or cut) for t, s, share, cut in LADDER))
    for option in options:
        cost = estimate(*option)
        if cost <= 60 * minutes:
            return option, cost, True
    return options[-1], estimate(*options[-1]), False


def minutes(s):
    return f"{s / 60:.1f}" if s < 600 else f"{s / 60:.0f}"


class Progress:
    """One line per finished run: a bar over every run of the plan, and the time left, the
    estimate of the runs still to come scaled by actual / estimated of those finished (without
    estimates: the finished runs' mean time for each run still to come)."""

    def __init__(self, remaining, out=None):  # None: sys.stdout as it is when a run finishes
        self.left = list(remaining)  # (key, estimated seconds) of each run still to train
        self.total, self.done = len(self.left), 0
        self.estimated = self.actual = 0.0
        self.started, self.out = time.perf_counter(), out

    def finished(self, key, actual):
        """A run of `key` (stage, method, budget) finished after `actual` seconds."""
        estimate = next((e for k, e in self.left if k == key), None)
        if estimate is None:  # not in the plan (another worker's share, say): nothing to scale by
            return
        self.left.remove((key, estimate))
        self.done += 1
        self.estimated, self.actual = self.estimated + estimate, self.actual + actual
        if self.estimated:
            scale = self.actual / self.estimated
            left, how = scale * sum(e for _, e in self.left), f"finished runs took {scale:.2f}x their estimate"
        else:  # no estimate (early stopping decides the epochs): the finished runs' mean
            left, how = self.actual / self.done * len(self.left), "at the finished runs' mean"
        filled = round(20 * self.done / max(self.total, 1))
        print(f"progress: [{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} runs, "
              f"{minutes(time.perf_counter() - self.started)} min so far, about {minutes(left)} min left "
              f"({how})", file=self.out, flush=True)


# ---------------------------------------------------------------- a study's plan

def planned(args, shape, n_train):
    """Every run the study trains, as Run: the search trials and seeds of each method at each
    budget, and the wide model's seeds. Epochs are --recipe strong's (fixed); otherwise None."""
    strong = args.recipe == "strong"
    full, search = (budget_epochs(args), budget_epochs(args, search=True)) if strong else (None, None)
    images = min(args.search_images or n_train, n_train)
    # budgets largest first share a wide model's pruning; otherwise each prunes it from the start
    budgets_share = 1 / len(args.budgets) if list(args.budgets) == sorted(args.budgets, reverse=True) else 1.0
    runs = []
    for budget in args.budgets:
        for method in (BY_NAME[n] for n in args.methods):
            pruned = method.wide == "prune"
            sized_as = BY_NAME["plain"] if pruned else method  # pruned: the budget's size
            dendritic = grows = not method.plain
            factor = DISTIL_FACTOR if method.wide == "teacher" else 1.0
            width, epochs = width_for(args, sized_as, budget, shape), (search, full)
            if args.layouts and (dendritic or method.control):
                # --maintainer: the longest layout, each epoch at most the cost of the plain model of the budget
                width, grows = width_for(args, BY_NAME["plain"], budget, shape), False
                epochs = [max(budget_epochs(args, s, {"layout": layout, "switch_patience": max(SWITCH_PATIENCES)})
                              for layout in args.layouts[budget]) for s in (True, False)]
            trials, pace = search_trials(args, method), {"pace": args.wide} if pruned else {}
            if method.control is None:
                runs += [Run("search", method.name, budget, width, epochs[0], images, factor, dendritic, grows,
                             pruned * budgets_share / trials, **pace)] * trials
            runs += [Run("seeds", method.name, budget, width, epochs[1], n_train, factor, dendritic, grows,
                         pruned * budgets_share, **pace)] * args.seeds
    if any(BY_NAME[n].wide for n in args.methods):
        runs += [Run("wide", "wide", None, args.wide, full, n_train)] * (args.seeds + 1)
    return runs


def key(run):
    return run.stage, run.method, run.budget


def done_already(args, url, runs):
    """The wall seconds of each run of each (stage, method, budget) the storage holds finished
    (None where a record from before they were recorded has none)."""
    done = {}
    for k in dict.fromkeys(map(key, runs)):
        stage, method, budget = k
        name = study_name(args, "wide") if stage == "wide" else study_name(args, stage, BY_NAME[method], budget)
        found = studies.finished(studies.open_study(url, name)) if studies.study_exists(url, name) else []
        done[k] = [t.user_attrs["record"].get("wall_seconds") for t in found]
    return done


def per_run(k, done, estimate):
    """A run's expected seconds: the mean of its stage's finished runs (on whichever machine
    trained them), else of its paired dendritic runs for a control (the same network less the
    dendrites, as many epochs), else `estimate` from the timing."""
    stage, method, budget = k
    paired = BY_NAME[method].paired if method in BY_NAME and BY_NAME[method].control else None
    finished = [s for s in done[k] or done.get((stage, paired, budget), []) if s is not None]
    return sum(finished) / len(finished) if finished else estimate


def size(args, url, splits, shape, rates):
    """--minutes: {trials, seeds, search_images, schedule_epochs, search_epochs} that fit, unless
    given; the first worker's choice is stored with the study, so that every worker and every
    restart trains the same plan."""
    n_train, evaluated = len(splits.train[1]), (len(splits.val[1]), len(splits.test[1]))
    given = args.given

    def option(trials, seeds, share, schedule):
        """The study's sizes at a rung of LADDER (a search's schedule, unless given, is the schedule's)."""
        return {"trials": trials, "seeds": seeds,
                "search_images": given["search_images"] or (None if share == 1 else n_train // share),
                "schedule_epochs": schedule or args.schedule_epochs,
                "search_epochs": given["search_epochs"] or schedule or args.search_epochs}

    def estimate(*rung):
        return sum(seconds(run, rates, *evaluated)
                   for run in planned(Namespace(**vars(args) | option(*rung)), shape, n_train))

    store = studies.open_study(url, study_name(args, "plan"))
    if "sized" not in store.user_attrs:
        rung, cost, fits = fit_ladder(estimate, args.minutes, given["trials"], given["seeds"], given["schedule_epochs"])
        sized = option(*rung)
        store.set_user_attr("sized", sized | {"minutes": args.minutes})
        trials, seeds, images, schedule = sized["trials"], sized["seeds"], sized["search_images"], rung[3]
        cut = [f"{trials} search trials a method (of {LADDER_TOP[0]})" if not given["trials"] else "",
               f"{seeds} seeds (of {LADDER_TOP[1]})" if not given["seeds"] and seeds < LADDER_TOP[1] else "",
               f"the search on {images:,} of {n_train:,} training images" if images and not given["search_images"]
               else "",
               f"schedules of {schedule} epochs (of {args.schedule_epochs}): every method trains less than it would"
               if schedule and not given["schedule_epochs"] else ""]
        chosen = ", ".join(c for c in cut if c) or "the trials, seeds and images given"
        print(f"--minutes {args.minutes:g}: {chosen}"
              + ("" if fits else f"; the smallest plan still takes about {cost / 60:.1f} minutes"))
    stored = store.user_attrs["sized"]  # a study sized before its schedule could be cut: as it was given
    sized = {k: stored.get(k, getattr(args, k)) for k in ("trials", "seeds", "search_images", "schedule_epochs",
                                                          "search_epochs")}
    for k, value in sized.items():
        if given[k] is not None and given[k] != value:
            raise UsageError(f"this study was sized with --{k.replace('_', '-')} {value}; give the same, "
                             "or use another --results folder")
    return sized


LADDER_TOP = LADDER[0][:2]


def one_for_all(args, url, measured, runs, evaluated):
    """--precision auto, once for the whole study, said in one line: the precision auto chooses
    (precision.choose) by the study's estimated seconds in each. Every method trains in it, which
    a choice per run could not promise (a run's choice is near its threshold, and turns on noise);
    the first worker's choice is stored with the study, so that every worker trains in it."""
    store = studies.open_study(url, study_name(args, "plan"))
    if "precision" in store.user_attrs:
        chosen = store.user_attrs["precision"]
        print(f"precision: {chosen} for every run of this study (chosen when it began)")
        return chosen
    totals = {name: sum(seconds(run, by_width, *evaluated) for run in runs) for name, by_width in measured.items()}
    chosen = precision.choose(totals)
    store.set_user_attr("precision", chosen)
    print(f"precision: {chosen} for every run of this study (--precision auto, from the timing: "
          + ", ".join(f"{name} {total / totals['fp32']:.2f}x" for name, total in totals.items() if name != "fp32")
          + " fp32's time)")
    return chosen


def plan_first(args, url, splits, shape, one_precision=False):
    """Before the first run: size the study to --minutes, print what it will train (per stage and
    in all, with the minutes expected from a timing of the model on the data). `one_precision`
    (a new study, --precision auto): choose the precision every run will train in. Returns what
    it settled ({} without --minutes; the precision) and the progress that each finished run
    reports to."""
    strong = args.recipe == "strong"
    rates, sized = None, {}
    evaluated = len(splits.val[1]), len(splits.test[1])
    if strong:
        started = time.perf_counter()
        runs = planned(args, shape, len(splits.train[1]))
        widths = {width for run in runs for width in (run.width, run.pace) if width}
        dendritic_widths = {run.width for run in runs if run.grows}
        available = precision.available(torch.device("cpu"))
        names = available if args.precision == "auto" else [args.precision if args.precision in available else "fp32"]
        measured = measure_rates(args.model, splits, widths, args.recipe, names, dendritic_widths)
        timing = time.perf_counter() - started
        if one_precision and len(names) > 1:
            sized["precision"] = one_for_all(args, url, measured, runs, evaluated)
            rates = measured[sized["precision"]]
        elif len(names) > 1:  # a study begun when auto chose for each run: each width as it would
            rates = {width: measured[precision.choose({name: measured[name][width][0] for name in names})][width]
                     for width in widths}
        else:
            rates = measured[names[0]]
        if args.minutes:
            sized |= size(args, url, splits, shape, rates)
        args = Namespace(**vars(args) | sized)
    runs = planned(args, shape, len(splits.train[1]))
    done = done_already(args, url, runs)
    remaining, lines = [], []
    for k in dict.fromkeys(map(key, runs)):
        group = [run for run in runs if key(run) == k]
        left = max(0, len(group) - len(done[k]))
        remaining += [(k, per_run(k, done, seconds(group[0], rates, *evaluated)) if strong else 0.0)] * left
        stage, method, budget = k
        what = "the wide model, seeds 0-" + str(args.seeds) if budget is None else f"{method} at {budget:,}"
        cost = f", about {minutes(left * remaining[-1][1])} min" if strong and left else ""
        lines.append(f"  {stage:<6} {what:<30} {len(group):>3} runs" + (f", {len(done[k])} done" if done[k] else "")
                     + cost)
    total = sum(e for _, e in remaining)
    print(f"plan: {len(args.methods)} methods ({', '.join(args.methods)}) at {len(args.budgets)} budgets, "
          f"{args.trials} search trial(s) a method, {args.seeds} seeds, the {args.recipe} recipe, "
          f"{len(splits.train[1]):,} training images:")
    print("\n".join(lines))
    estimate = (f"about {minutes(total)} minutes on this machine (from the finished runs' times, else a "
                f"{timing:.0f}-second timing of {args.model} on these images at each width; the estimate is "
                "corrected as runs finish)"
                if strong else "minutes not estimated: early stopping decides each run's epochs")
    print(f"in all: {len(remaining)} runs to train of {len(runs)}, {estimate}. Stop it at any time (Ctrl-C) and "
          "run the same command again to continue where it stopped.", flush=True)
    return sized, Progress(remaining)
