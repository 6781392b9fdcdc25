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


def suggest_dendrites(trial):
    """The library's settings that its own W&B sweep template searches."""
    return {"improvement_threshold": trial.suggest_categorical(
                "improvement_threshold", ["0.001 0.0001 0", "0.01 0.001 0.0001 0"]),
            "candidate_init": trial.suggest_categorical("candidate_init", [0.1, 0.01]),
            "dendrite_activation": trial.suggest_categorical("dendrite_activation", ["sigmoid", "relu", "tanh"])}


def dendrite_settings():
    """What only dendritic runs have, the library's settings its search draws (matched drops them)."""
    import optuna

    return set(suggest_dendrites(optuna.create_study().ask()))  # an in-memory trial, to read them off


def overrides(hp):
    """A configuration as RunConfig overrides. The space draws an improvement_threshold as one
    string, since Optuna's choices are plain values; a run takes its list of gains."""
    return {key: tuple(map(float, value.split())) if key == "improvement_threshold" else value
            for key, value in hp.items() if key != "width"}


def describe(hp):
    return ", ".join(f"{key} {value:.2g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in hp.items())
