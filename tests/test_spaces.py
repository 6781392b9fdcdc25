"""experiments/common/spaces.py: the search spaces and the RunConfig a configuration becomes."""
import dataclasses

import optuna

from experiments.common import spaces
from neuroshrink.config import RunConfig


def test_a_configuration_becomes_run_settings():
    hp = {"lr": 0.003, "dropout": 0.3, "improvement_threshold": "0.01 0.001 0", "dendrite_activation": "tanh",
          "width": 0.5}
    config = dataclasses.replace(RunConfig(), **spaces.overrides(hp))
    assert (config.lr, config.dropout, config.improvement_threshold, config.dendrite_activation, config.width) == (
        0.003, 0.3, (0.01, 0.001, 0.0), "tanh", None)  # the width is the cell's, not the configuration's


def test_the_recipe_search_draws_every_schedule():
    trial = optuna.create_study().ask()
    spaces.suggest_recipe(trial)
    assert trial.distributions["schedule"].choices == ("none", "cosine")


def test_the_dendritic_strong_search_may_choose_no_weight_decay():
    """--allow-zero-decay: a coin, then the committed range; a plain method's space is unchanged."""
    from experiments.shrink import methods

    off = optuna.trial.FixedTrial({"lr": 0.003, "no_weight_decay": True, "label_smoothing": 0.1})
    on = optuna.trial.FixedTrial({"lr": 0.003, "no_weight_decay": False, "weight_decay": 0.05, "label_smoothing": 0.0})
    assert spaces.suggest_strong(off, zero_decay=True) == {"lr": 0.003, "weight_decay": 0.0, "label_smoothing": 0.1}
    assert spaces.suggest_strong(on, zero_decay=True)["weight_decay"] == 0.05
    plain = optuna.trial.FixedTrial({"lr": 0.003, "weight_decay": 0.05, "label_smoothing": 0.0})  # no coin asked
    assert methods.suggest(plain, methods.BY_NAME["plain"], dropout=False, strong=True, zero_decay=True)[
        "weight_decay"] == 0.05
    study = optuna.create_study()
    trial = study.ask()
    methods.suggest(trial, methods.BY_NAME["dendritic"], dropout=False, strong=True, zero_decay=True)
    assert "no_weight_decay" in trial.distributions
