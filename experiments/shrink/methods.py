"""The methods experiments.shrink compares, and what each one trains: its search space, its
model's width at a budget, its training flags, the studies its runs are stored in.

The methods and their pairings are data (Method): a plain method pairs with the dendritic run
whose epochs it trains, a control takes another method's configuration and the paired run's
restarts, and a method may start from the wide model (pruned from it, or distilled from it as
a teacher). The shrink command runs them; docs/verdict.md says why each exists.
"""

import math
from dataclasses import dataclass, field

import optuna

from experiments.common import spaces
from model import count_parameters, width_for_params
from neuroshrink import build, data, placement
from neuroshrink.errors import UsageError

MNIST_RECIPE = dict(optimizer="adadelta", lr=1.0, schedule="step", patience=10)  # the library's MNIST example
API_RECIPE = dict(optimizer="adam", schedule="plateau", patience=10)  # the library's API README


@dataclass(frozen=True)
class Method:
    name: str
    plain: bool                   # trained without the library (no_dendrites)
    recipe: dict = field(default_factory=dict)  # fixed RunConfig settings; {}: this project's, searched
    paired: str | None = None     # the dendritic method whose seed runs set this one's epochs (and restarts)
    control: str | None = None    # a control takes this method's configuration and the paired restarts
    wide: str | None = None       # "prune" or "teacher": starts from the wide plain model, pruned or distilled


METHODS = (
    Method("dendritic", plain=False),
    Method("plain", plain=True, paired="dendritic"),
    Method("matched", plain=True, paired="dendritic", control="dendritic"),
    Method("pruned", plain=True, paired="dendritic", wide="prune"),
    Method("distilled", plain=True, paired="dendritic", wide="teacher"),
    Method("dendritic-distilled", plain=False, wide="teacher"),
    Method("matched-distilled", plain=True, paired="dendritic-distilled", control="dendritic-distilled",
           wide="teacher"),
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
# the dendritic student of the wide teacher and its control, beside distilled (the library's Food-101 example):
# asked for by name, not among any recipe's defaults
DENDRITIC_STUDENT = ("dendritic-distilled", "matched-distilled")
STRONG_ALLOWED = STRONG_METHODS + DENDRITIC_STUDENT
DEFAULT_METHODS = tuple(m.name for m in METHODS if m.name not in DENDRITIC_STUDENT)  # the default recipe's
# Your model or your images: the question is dendritic against its control, and the best plain
# way to the budget (docs/own-data.md says why distillation and the library recipes are left out).
USER_METHODS = ("dendritic", "matched", "plain", "pruned")

DROPOUTS = (0.1, 0.3, 0.5)


def suggest(trial, method, dropout=True, strong=False, zero_decay=False, layouts=None):
    """A configuration from the method's search space. Every method: dropout, if the model has
    any. This project's recipe: also the learning rate, patience and schedule (none or
    cosine); the strong recipe: the learning rate, weight decay (for a dendritic method with
    `zero_decay`, possibly none) and label smoothing.
    Dendritic: what the library's W&B sweep template searches; with `layouts` (--maintainer)
    also what its maintainer sets. Distilled: the soft targets' weight and temperature."""
    hp = {"dropout": trial.suggest_categorical("dropout", DROPOUTS)} if dropout else {}
    hp |= ({} if method.recipe else spaces.suggest_strong(trial, zero_decay and not method.plain) if strong
           else spaces.suggest_recipe(trial))
    hp |= {} if method.plain else spaces.suggest_dendrites(trial, layouts)
    if method.wide == "teacher":
        hp |= {"distill_weight": trial.suggest_categorical("distill_weight", [0.25, 0.5, 0.75]),
               "temperature": trial.suggest_categorical("temperature", [2.0, 4.0])}
    return hp


# A study asks for the same widths again and again (budgets checked, planned, every trial and seed
# trained), and a model of fixed widths, narrowed by pruning, is slow to build: (model, placement,
# head units, "plain" or the dendrite sets, data shape) -> {width step: count}
COUNTS = {}


def width_for(args, method, budget, shape, hp=None):
    """The width of the method's model at the budget (pruned: the wide model it starts from):
    a dendritic model's with every dendrite set it may add, where its configuration `hp`
    places them (default: one set on every layer); with placement head, the added layer counted."""
    if method.wide == "prune":
        return args.wide
    changes = spaces.overrides(hp or {})
    where, sets = changes.get("placement", "all"), changes.get("max_dendrites", args.max_dendrites)
    count = count_parameters if method.plain else lambda model: placement.count_with_sets(model, sets, where)
    fixed = build.fixed_width(args.model)
    key = (args.model, where, changes.get("head_units"), "plain" if method.plain else sets, *shape.values())
    return width_for_params(build.factory_of(args.model, where, changes.get("head_units")), budget, count=count,
                            bisect=fixed, memo=COUNTS.setdefault(key, {}), **shape)


def layouts(args, budget, shape):
    """--maintainer: the dendrite layouts (placement, sets) whose model can meet the budget."""
    model = build.model_factory(args.model)(width=1.0, **shape)
    found = []
    for where in ("all", "later", "head") + (("blocks",) if placement.blocks(model) else ()):
        for units in spaces.HEAD_UNITS if where == "head" else (None,):
            for sets in spaces.MAX_DENDRITES:
                try:
                    width_for(args, BY_NAME["dendritic"], budget, shape, {"layout": spaces.layout(where, sets, units)})
                except (ValueError, UsageError):  # too few parameters for it, or no final linear layer
                    continue
                found.append(spaces.layout(where, sets, units))
    return found


def budget_epochs(args, search=False, hp=None):
    """--recipe strong: the most epochs of a dendritic run (a schedule per architecture; with a
    switch patience, the schedule and the plateau), which every other run of the same seed
    trains (the search's: its reduced schedule). `hp`: the run's configuration."""
    changes = configuration(args, hp, search)
    schedule = args.search_epochs if search else args.schedule_epochs
    return (changes.get("max_dendrites", args.max_dendrites) + 1) * (schedule + changes.get("patience", 0)
                                                                     * (changes.get("switch") == "history"))


def strong_overrides(args, method, epochs, search):
    """--recipe strong: a dendritic run adds its set as each schedule ends; any other trains
    exactly `epochs` (plain: under one schedule; a control: under the dendritic run's). A
    search's reduction (its schedule, its training images, its epochs: a dendritic trial whose
    set was rolled back and tried again stops there too) is the same for every method."""
    schedule = args.search_epochs if search else args.schedule_epochs
    changes = {"train_images": args.search_images} if search and args.search_images else {}
    # Magnitude pruning of a weight-decayed model collapses layers (docs/verdict-strong.md).
    changes |= {"prune_importance": "lamp"} if method.wide == "prune" else {}
    if not method.plain:
        return changes | {"schedule_epochs": schedule} | ({"epochs": epochs} if search else {})
    return changes | {"epochs": epochs, "min_epochs": epochs, "schedule_epochs": schedule if method.control else epochs}


def overrides(args, method, budget, hp, seed, wide_runs, epochs=None, search=False):
    """A run's RunConfig settings besides the cell's (width, seed, least epochs): how the model
    gets the budget's size, the recipe, the wide model it starts from, the configuration; with
    --recipe strong, the run's epochs (`epochs`: a plain run's) and a search's reduction."""
    changes = method.recipe | (strong_overrides(args, method, epochs, search) if args.recipe == "strong" else {})
    # A trial's product is its validation accuracy. A seed's milliseconds come from one timing pass
    # (--time-inference; report.py), a shipped file's as it is shipped: a run times nothing.
    changes |= {"no_export": True} if search else {"no_timing": True}
    changes |= {"no_dendrites": True, "params": budget} if method.plain else {}
    if method.wide == "prune":
        changes["prune_from"] = str(wide_runs[seed])
    elif method.wide == "teacher":
        changes["teacher"] = str(wide_runs[seed] / "model.ts")
    return changes | configuration(args, hp, search)


def configuration(args, hp, search=False):
    """A drawn configuration as RunConfig overrides; in a search, a switch's plateau shortened as
    its schedule is (--search-epochs against --schedule-epochs), the same reduction."""
    changes = spaces.overrides(hp or {})
    if search and changes.get("switch") == "history":
        changes["patience"] = max(1, round(changes["patience"] * args.search_epochs / args.schedule_epochs))
    return changes


def search_space(args, method):
    """What the method's search draws from, {name: distribution}; a control: its plain recipe's."""
    trial = optuna.create_study().ask()  # an in-memory study, to read the space off suggest()
    suggest(trial, BY_NAME[method.control] if method.control else method, args.model_has_dropout,
            args.recipe == "strong", args.allow_zero_decay, ["all x1"] if args.maintainer else None)
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
    name = f"shrink-{data.label(args.dataset)}-{build.label(args.model)}"
    name += "-strong" if args.recipe == "strong" else ""
    if stage == "wide":  # the wide model's seeds: every study of the data and model shares them
        return f"{name}-{stage}"
    name += "-maintainer" if args.maintainer else ""  # the dendritic search's wider space: studies of its own
    if stage == "plan":  # the study's size, as its first worker chose it
        return f"{name}-{stage}"
    if method.recipe:  # a library recipe's: its dendritic search draws distinct configurations, and the
        # others pair with it (not the studies of the TPE draws that came before)
        stage = {"search": "distinct", "seeds": "distinct-seeds"}[stage]
    return f"{name}-b{budget}-{method.name}-{stage}"


def search_trials(args, method):
    """How many search trials the method gets: --trials, fewer where its space is a smaller finite
    set, one where it has nothing to tune (a recipe's plain CNN without dropout)."""
    size = without_repeats(args, method)
    return min(args.trials, size) if size else args.trials if search_space(args, method) else 1


def check_methods(names):
    """A paired method needs its dendritic run (its epochs), a control its plain recipe too."""
    for name in names:
        needed = [other for other in dict.fromkeys((BY_NAME[name].paired, BY_NAME[name].control))
                  if other and other not in names]
        if needed:
            raise UsageError(f"--methods {name} needs {' and '.join(needed)} as well: "
                             f"{name}'s runs are paired with theirs")


