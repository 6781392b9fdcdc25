"""experiments/spaces.py: the search spaces and the flags a configuration becomes."""
import optuna

import train_phase2
from experiments import spaces


def test_a_configuration_becomes_train_phase2_flags():
    hp = {"lr": 0.003, "dropout": 0.3, "improvement_threshold": "0.01 0.001 0", "dendrite_activation": "tanh"}
    args = train_phase2.parse_args(spaces.flags(hp))
    assert (args.lr, args.dropout, args.improvement_threshold, args.dendrite_activation) == (
        0.003, 0.3, [0.01, 0.001, 0.0], "tanh")


def test_the_recipe_search_draws_every_schedule():
    trial = optuna.create_study().ask()
    spaces.suggest_recipe(trial)
    assert trial.distributions["schedule"].choices == ("none", "cosine")
