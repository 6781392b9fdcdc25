"""Which CNN family spends its parameters best? Each candidate at the same parameter budget,
trained side by side in one process with the same recipe and epochs: accuracy per parameter
and per second of training.

Every candidate is the demo's plain run (no_dendrites) at the width whose model
has the budget (params), for exactly --epochs epochs (no early stopping), one after another,
nothing else training. The report gives, per candidate: parameters, training seconds per
epoch, and the validation and test accuracy after each epoch (test at the epoch validation
chose). Timing is only comparable within one report: it names the CPU, threads and date.

    python -m experiments.families --dataset fashion-mnist --budget 80000 --epochs 4
"""

import contextlib
import io
import tempfile
import time
from pathlib import Path

import torch

import train_phase2
from neuroshrink.machine import cpu_name
from experiments.common.runner import add_outputs, exit_status
from neuroshrink import data
from neuroshrink.config import RunConfig
from neuroshrink.options import add_options, resolved_defaults
from neuroshrink.flags import Parser, positive


def get_args_parser():
    p = Parser(prog="python -m experiments.families", description=__doc__.split("\n\n")[0])
    shared = ["dataset", "data_dir", "recipe", "precision", "threads", "quick", "epochs"]  # every candidate's
    add_options(p, shared, resolved_defaults(shared) | {"epochs": 4}, default_notes={"epochs": "4"})
    p.add_argument("--budget", type=positive(int), default=80000, help="parameters of every candidate")
    p.add_argument("--models", nargs="+", default=["net", "rescnn", "conv2pool", "slim"],
                   help="the candidates (built-in names or package.module:factory)")
    add_outputs(p, "the report goes to <results>/<dataset>/", seeds=(1, "every candidate"))
    return p


def main(args):
    results_dir = Path(args.results) / data.label(args.dataset)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for seed in range(1, args.seeds + 1):
                config = RunConfig(dataset=args.dataset, data_dir=args.data_dir, model=model, no_dendrites=True,
                                   params=args.budget, recipe=args.recipe, epochs=args.epochs, min_epochs=args.epochs,
                                   patience=args.epochs, seed=seed, precision=args.precision, threads=args.threads,
                                   quick=args.quick)
                print(f"=== {model} seed {seed}", flush=True)
                with contextlib.redirect_stdout(io.StringIO()):
                    result = train_phase2.run(config, Path(tmp) / f"{model}-{seed}")
                rows.append((model, seed, result))
    recipe = {"default": "this project's default recipe (Adam 1e-3, batch 64, no augmentation)",
              "strong": f"the strong recipe (its warm-up and cosine schedule over the {args.epochs} epochs)",
              }[args.recipe]
    lines = [f"## CNN families at {args.budget:,} parameters on {args.dataset}", "",
             f"Each plain, trained {args.epochs} epochs with {recipe}, seed(s) 1-{args.seeds}, one after another "
             f"in one process on {cpu_name()}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. "
             "Test accuracy at the epoch validation chose.", "",
             "| model | width | params | train s / epoch | val acc % by epoch | test acc % |", "|---|---|---|---|---|---|"]
    for model, seed, result in rows:
        history, final = result["history"], result["final"]
        seconds = sum(r["train_seconds"] for r in history) / len(history)
        by_epoch = " ".join(f"{r['val_acc']:.2f}" for r in history)
        lines.append(f"| {model} | {result['settings']['width']:g} | {final['params']:,} | {seconds:.1f} "
                     f"| {by_epoch} | {final['test_acc']:.2f} |")
    report = "\n".join(lines) + "\n"
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"families-{args.budget}{'' if args.recipe == 'default' else '-' + args.recipe}.md"
    path.write_text(report)
    print("\n" + report + f"\nwrote {path}")
    return rows


if __name__ == "__main__":
    with exit_status():
        main(get_args_parser().parse_args())
