"""What every experiment does alike: its common flags, training one run of a sweep with
train_phase2's own main(), and ending a worker with one line.

A sweep's run (a *cell*: width or budget, method, seed, ...) is trained in its own run
folder. A stopped run found there with the same settings is continued, a finished one is
recorded without training again, and one of other settings (left by a study since deleted)
is replaced.
"""

import shutil
import signal
import sys
from pathlib import Path

import train_phase2
from neuroshrink import data, models, precision
from neuroshrink.errors import NeuroShrinkError, UsageError
from neuroshrink.flags import Parser, positive
from neuroshrink.recipes import RECIPES
from neuroshrink.run_folder import Interrupted, read_run

SWEEP_SETTINGS = ("patience", "max_dendrites", "epochs", "precision", "quick", "recipe")  # every run of a sweep shares
BEFORE = {"recipe": "default"}  # what sweeps stored before a setting joined SWEEP_SETTINGS were run with


def common_parser(name, description):
    """The flags every sweep takes: data, seeds, run settings, where records and runs go, workers."""
    p = Parser(prog=f"python -m experiments.{name}", description=description)
    p.add_argument("--dataset", default="digits", type=data.source, metavar="DATASET",
                   help=f"{', '.join(data.CHOICES)} (train_phase2 --dataset)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--image-size", type=positive(int), default=None, metavar="S",
                   help="your own images: resize them to S x S (train_phase2 --image-size)")
    p.add_argument("--model", default="net",
                   help="net, rescnn, or your own package.module:factory (train_phase2 --model)")
    p.add_argument("--seeds", type=positive(int), default=3, help="seeds 1..N of every run that is tested")
    p.add_argument("--recipe", default="default", choices=RECIPES,
                   help="every run's training recipe (train_phase2 --recipe)")
    p.add_argument("--patience", type=positive(int), default=5)
    p.add_argument("--max-dendrites", type=positive(int), default=3)
    p.add_argument("--epochs", type=positive(int), default=200, help="cap for every run")
    p.add_argument("--results", default="results", help="tables, plots and records go to <results>/<dataset>/")
    p.add_argument("--runs", default="runs", help="run folders go to <runs>/<dataset>/")
    p.add_argument("--report-only", action="store_true", help="no training: report the stored runs")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL shared by the workers (default: sqlite:///<results>/<dataset>/sweep.db; "
                        "postgresql://user@host/db for several machines)")
    p.add_argument("--heartbeat", type=positive(int), default=30,
                   help="seconds between a worker's heartbeats; a run 3 beats late is retried by another worker")
    p.add_argument("--threads", type=positive(int), default=None, help="CPU threads per worker (train_phase2 --threads)")
    p.add_argument("--precision", default="fp32", choices=precision.CHOICES,
                   help="training precision of every run (train_phase2 --precision; auto: each run measures and "
                        "takes the fastest, and its record says which)")
    p.add_argument("--wandb", action="store_true", help="log every run to Weights & Biases (train_phase2 --wandb)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="every run also quantized to int8 (train_phase2 --quantize)")
    p.add_argument("--quick", action="store_true", help="train_phase2's smoke-run settings (for tests)")
    return p


def folders(args):
    """(results folder, runs folder) of the sweep: <results>/<dataset>, <runs>/<dataset>."""
    name = data.label(args.dataset)
    return (Path(args.results) / name).resolve(), Path(args.runs) / name


def names(args):
    """What a study name says of the data and the model: the dataset, and the model if not net."""
    return data.label(args.dataset) + ("" if args.model == "net" else f"-{models.label(args.model)}")


def check_settings(study, args):
    """Every run of a study shares the sweep settings: the first worker sets them."""
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", {key: getattr(args, key) for key in SWEEP_SETTINGS})
        return
    for key in SWEEP_SETTINGS:
        if stored.get(key, BEFORE.get(key)) != getattr(args, key):
            raise UsageError(f"the sweep {study.study_name} holds runs made with --{key.replace('_', '-')} "
                             f"{stored.get(key, BEFORE.get(key))}, not {getattr(args, key)}; "
                             "use another --results folder")


def run_cell(args, cell, run_dir, extra=()):
    """Train one cell with train_phase2's main() (with `extra` flags); returns its record."""
    flags = ["--dataset", args.dataset, "--width", str(cell["width"]), "--seed", str(cell["seed"]),
             "--precision", args.precision, "--patience", str(args.patience),
             "--max-dendrites", str(args.max_dendrites), "--epochs", str(args.epochs), "--out", str(run_dir)]
    flags += ["--data-dir", args.data_dir] if args.data_dir else []
    flags += ["--image-size", str(args.image_size)] if args.image_size else []
    flags += ["--model", args.model] if args.model != "net" else []
    flags += ["--threads", str(args.threads)] if args.threads else []
    flags += ["--recipe", args.recipe] if args.recipe != "default" else []
    flags += ["--quick"] if args.quick else []
    flags += ["--wandb"] if args.wandb else []
    flags += ["--quantize", args.quantize] if args.quantize else []
    flags += ["--min-epochs", str(cell["min_epochs"]), "--graph-at-end"]  # min epochs: used by plain runs only
    flags += ["--no-dendrites"] if cell["method"] == "plain" else []
    result = run_flags(flags + list(extra), run_dir)
    final = result["final"]
    return {"dataset": args.dataset, "width": cell["width"], "method": cell["method"], "seed": cell["seed"],
            "params": final["params"], "test_acc": final["test_acc"], "val_acc": final["val_acc"],
            "best_epoch": final["best_epoch"], "epochs": final["epochs"], "min_epochs": cell["min_epochs"],
            "dendrite_sets": final["dendrite_sets"], "wall_seconds": final["wall_seconds"],
            "inference_ms": final.get("inference_ms"),  # runs from before it was measured have none
            "onnx": final.get("onnx"), "int8": final.get("int8"),  # runs from before ONNX export have none
            "restarts": [r["epoch"] for r in result["restructures"] if r["kind"] != "training complete"],
            "lrs": [row.get("lr") for row in result["history"]],  # each epoch's learning rate
            "precision": (result.get("precision") or {}).get("chosen", result["settings"]["precision"]),  # auto's too
            "run": str(run_dir), "settings": result["settings"],
            "sweep": {key: getattr(args, key) for key in SWEEP_SETTINGS}}


def run_flags(flags, run_dir):
    """train_phase2's run of these flags (which name --out run_dir), trained in its folder or
    continued there if it stopped; returns its results.json record."""
    run_args = train_phase2.resolve_settings(train_phase2.parse_args(flags))  # as results.json records them
    previous = read_run(run_dir)
    # With --params the width is found from the model, the budget and the data, all compared.
    keys = [key for key in train_phase2.RUN_SETTINGS if not (key == "width" and run_args.params)]
    same = previous is not None and all(train_phase2.settings_of(previous).get(key) == getattr(run_args, key)
                                        for key in keys)
    if same and previous["status"] != "complete":  # a worker stopped or vanished
        threads = ["--threads", str(run_args.threads)] if run_args.threads else []  # a worker's, not a run setting
        result = train_phase2.main(train_phase2.parse_args(["--resume", "--graph-at-end", "--out", str(run_dir), *threads]))
    elif same:
        print(f"{run_dir} holds this run, finished: recording it")
        result = previous
    else:
        if previous is not None:  # another run's (of a study since deleted): stopped or finished
            print(f"{run_dir} holds a run of other settings: training this one in its place")
            shutil.rmtree(run_dir)
        result = train_phase2.main(run_args)
    return result


DEPLOYMENT_FIELDS = ("onnx_bytes", "ort_ms_batch1", "ort_ms_batch256", "int8_test_acc", "int8_bytes",
                     "int8_ort_ms_batch1")  # a record's deployment, in a CSV


def deployment_cells(record):
    """A record's DEPLOYMENT_FIELDS; blank where it has none (recorded before ONNX export, or
    not quantized)."""
    onnx, int8 = record.get("onnx") or {}, record.get("int8") or {}
    return [onnx.get("bytes", ""), onnx.get("ort_ms", {}).get("1", ""), onnx.get("ort_ms", {}).get("256", ""),
            int8.get("test_acc", ""), int8.get("bytes", ""), int8.get("ort_ms", {}).get("1", "")]


def cli(main, parser):
    """Run a worker; errors end it with one line and a non-zero status, and so does a stop
    (its cell is continued by the next worker to start)."""
    args = parser().parse_args()
    try:
        main(args)
    except NeuroShrinkError as e:
        sys.exit(f"error: {e}")
    except (Interrupted, KeyboardInterrupt) as stop:
        print("stopped; start the same command again to continue the sweep", file=sys.stderr)
        sys.exit(128 + getattr(stop, "signum", signal.SIGINT))
