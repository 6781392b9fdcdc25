"""Search spaces the experiments share, and how a configuration becomes RunConfig overrides.

Every search trial trains with SEARCH_SEED and is judged on validation only; the seeds 1..S
that report on test are never used to choose."""

SEARCH_SEED = 0


def suggest_recipe(trial):
    """This project's training recipe: Adam's learning rate, the patience, the schedule."""
    return {"lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
            "patience": trial.suggest_int("patience", 2, 6),
            "schedule": trial.suggest_categorical("schedule", ["none", "cosine"])}


def suggest_strong(trial, zero_decay=False):
    """The strong recipe's (AdamW, warm-up and cosine, augmentation): the learning rate, the
    weight decay and the label smoothing, around its defaults 3e-3, 0.05 and 0.1. With
    `zero_decay` a coin first decides whether there is weight decay at all (the library's
    docs warn that it can hurt dendrite learning)."""
    lr = trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    off = zero_decay and trial.suggest_categorical("no_weight_decay", [True, False])
    return {"lr": lr, "weight_decay": 0.0 if off else trial.suggest_float("weight_decay", 0.005, 0.2, log=True),
            "label_smoothing": trial.suggest_categorical("label_smoothing", [0.0, 0.1])}


def suggest_dendrites(trial, layouts=None):
    """The library's settings that its own W&B sweep template searches. With `layouts` (the
    dendrite layouts that can meet the study's budget, see layout()), also what the library's
    maintainer sets in its ResNet-18 recipe: where the dendrites go and how many sets (one
    choice, so that every draw meets the budget), the learning rate after a restructure, and the
    plateau before a switch (0: as each schedule ends, this project's)."""
    hp = {"improvement_threshold": trial.suggest_categorical(
              "improvement_threshold", ["0.001 0.0001 0", "0.01 0.001 0.0001 0"]),
          "candidate_init": trial.suggest_categorical("candidate_init", [0.1, 0.01]),
          "dendrite_activation": trial.suggest_categorical("dendrite_activation", ["sigmoid", "relu", "tanh"])}
    if layouts:
        hp |= {"layout": trial.suggest_categorical("layout", list(layouts)),
               "restructure_lr": trial.suggest_categorical("restructure_lr", list(RESTRUCTURE_LRS)),
               "switch_patience": trial.suggest_categorical("switch_patience", list(SWITCH_PATIENCES))}
    return hp


RESTRUCTURE_LRS = (1.0, 10.0)   # the maintainer multiplies by 10
SWITCH_PATIENCES = (0, 3, 6)    # epochs without improvement before a switch; 0: as each schedule ends
MAX_DENDRITES = (1, 3, 5)       # the maintainer's 5; the committed verdict's 1
HEAD_UNITS = (None, 64, 16)     # None: as wide as the classifier's inputs, the maintainer's


def layout(placement, sets, head_units=None):
    """One choice of where the dendrites go and how many sets, as the search draws it: "later x3",
    "head x1" (the added layer as wide as the classifier's inputs), "head64 x5"."""
    return f"{placement}{head_units or ''} x{sets}"


def parse_layout(text):
    """(placement, sets, head_units) of a layout()."""
    where, sets = text.split(" x")
    units = "".join(c for c in where if c.isdigit())
    return where.rstrip("0123456789"), int(sets), int(units) if units else None


def dendrite_settings():
    """What only dendritic runs have, the library's settings its search draws (matched drops them)."""
    import optuna

    return set(suggest_dendrites(optuna.create_study().ask(), ["all x1"]))  # an in-memory trial, to read them off


def overrides(hp):
    """A configuration as RunConfig overrides. The space draws an improvement_threshold as one
    string, since Optuna's choices are plain values; a run takes its list of gains. A layout
    is a placement and a number of sets; a switch patience other than 0 the history switch."""
    changes = {key: tuple(map(float, value.split())) if key == "improvement_threshold" else value
               for key, value in hp.items() if key not in ("width", "layout", "switch_patience")}
    if "layout" in hp:
        where, sets, units = parse_layout(hp["layout"])
        changes |= {"placement": where, "max_dendrites": sets} | ({"head_units": units} if units else {})
    if hp.get("switch_patience"):
        changes |= {"switch": "history", "patience": hp["switch_patience"]}
    return changes


def control(hp):
    """A control's configuration (matched): the dendritic one less what only dendrites have, but
    with the added layer of a head layout (the same network without its dendrites)."""
    kept = {key: value for key, value in hp.items() if key not in dendrite_settings()}
    if "layout" in hp:
        where, _, units = parse_layout(hp["layout"])
        kept |= ({"placement": "head"} | ({"head_units": units} if units else {})) if where == "head" else {}
    return kept


def describe(hp):
    return ", ".join(f"{key} {value:.2g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in hp.items())
