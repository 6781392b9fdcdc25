"""The experiments behind the README's answers, one command each (`python -m experiments.<name>`):

    width_sweep   can a narrower CNN plus dendrites match a wider plain one?
    search        the same hyperparameter search for every method, on validation only
    shrink        which method shrinks a CNN best, at equal parameter budgets, tuned alike
    speed         where the demo's time goes, against a plain PyTorch loop

What they share: runner (training one run of a sweep, the common flags), studies (Optuna
storage shared by workers), spaces (search spaces), report (numbers and figures). They import
the package and train_phase2's entry points, never one another's commands.
"""
