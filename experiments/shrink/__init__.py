"""python -m experiments.shrink: which method shrinks a CNN best, at equal parameter budgets,
tuned alike (docs/verdict.md). Its files, top-down:

    command   the command line, the Study resolved once from it, and main(): studies, report, answer
    stages    each method's search and seeds at a budget, the wide model, pairing, driven
    methods   what each method trains, as RunConfig overrides; budgets, epochs, study names
    plan      the plan and its cost before anything trains, --minutes, progress
    rates     what a run of each width costs on this machine, for the plan
    report    a study's report, either recipe: the tables (accuracy, kB, int8, ms), the CSV, the plots
"""

from experiments.shrink.command import get_args_parser, main

__all__ = ["get_args_parser", "main"]
