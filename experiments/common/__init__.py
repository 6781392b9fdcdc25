"""What the experiments' commands share, and nothing that is a command:

    runner     a sweep's common options and one run of it (a config, reused when its run-defining
               settings agree, else trained)
    studies    Optuna storage shared by worker processes (SQLite, PostgreSQL)
    spaces     the search spaces and the RunConfig a configuration becomes
    tables     numbers and figures: mean ± std, tables of deployment costs, plots
    kept_runs  the final models a study counts, kept with its records, and their timing pass
    deploy     a study's winner per budget, chosen by validation, shipped self-contained
"""
