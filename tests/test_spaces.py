"""experiments/spaces.py: the search spaces and the RunConfig a configuration becomes."""
import dataclasses

import optuna

from experiments import spaces
from neuroshrink.config import RunConfig


def test_a_configuration_becomes_run_settings():
    hp = {"lr": 0.003, "dropout": 0.3, "improvement_threshold": "0.01 0.001 0", "dendrite_activation": "tanh",
          "width": 0.5}
    config = dataclasses.replace(RunConfig(), **spaces.overrides(hp))
    assert (config.lr, config.dropout, config.improvement_threshold, config.dendrite_activation, config.width) == (
        0.003, 0.3, (0.01, 0.001, 0.0), "tanh", 0.125)  # the width is the cell's, not the configuration's


def test_the_recipe_search_draws_every_schedule():
    trial = optuna.create_study().ask()
    spaces.suggest_recipe(trial)
    assert trial.distributions["schedule"].choices == ("none", "cosine")
