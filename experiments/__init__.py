"""The experiments behind the README's answers, one command each (`python -m experiments.<name>`).

Where a file sits says what it is: a file here is a command; a folder with a __main__.py is a
command of several files (shrink/, speed/); common/ holds what the commands share and is no command.

    shrink          which method shrinks a CNN best, at equal parameter budgets, tuned alike
    width_sweep     can a narrower CNN plus dendrites match a wider plain one?
    search          the same hyperparameter search for every method, on validation only
    run             one run with every setting on its command line (the experiments' controls too)
    families        which CNN family spends its parameters best, at one budget
    strong_recipe   the strong recipe against the default one, seed by seed
    speed           where the demo's time goes, against a plain PyTorch loop; with --time-to-target
                    minutes to accuracy by recipe, and the training step against the CPU's matrix rate
    peak_memory     a run's peak memory, for this checkout or another
    study_time      where the own-data study's time goes, for this checkout or another
    example_folder  a small image folder of real images, to try folder: with

They import the package, train_phase2's entry points and common/, never one another.
"""
