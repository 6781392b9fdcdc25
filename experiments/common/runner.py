"""What every experiment does alike: its common options, training one run of a sweep with
train_phase2's own run(), and ending a worker with one line.

A sweep's run (a *cell*: width or budget, method, seed, ...) is trained in its own run
folder. A stopped run found there with the same settings is continued, a finished one is
recorded without training again, and one of other settings (left by a study since deleted)
is replaced.
"""

import contextlib
import dataclasses
import shutil
import signal
import sys
from pathlib import Path

import train_phase2
from neuroshrink import build, data, user_data
from neuroshrink.config import RunConfig
from neuroshrink.options import add_options, resolved_defaults, sweep_names
from neuroshrink.records import BEFORE_IT_EXISTED, migrate
from neuroshrink.errors import NeuroShrinkError, UsageError
from neuroshrink.flags import Parser, positive
from neuroshrink.run_folder import Interrupted, read_run

SHARED = sweep_names("shared")  # every run of a sweep has the same: the first worker's


def common_parser(name, description):
    """The options every sweep takes: RunConfig's sweep settings (their defaults the default
    recipe's), seeds, where records and runs go, workers."""
    p = Parser(prog=f"python -m experiments.{name}", description=description)
    add_options(p, sweep_names(), resolved_defaults(sweep_names()) | {"precision": None}, default_notes={
        "precision": "auto for a new sweep; one already started keeps the precision it began with"})
    add_outputs(p, "tables, plots and records go to <results>/<dataset>/", runs="<runs>/<dataset>/",
                seeds=(3, "every run that is tested"))
    p.add_argument("--report-only", action="store_true", help="no training: report the stored runs")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL shared by the workers (default: sqlite:///<results>/<dataset>/sweep.db; "
                        "postgresql://user@host/db for several machines)")
    p.add_argument("--heartbeat", type=positive(int), default=30,
                   help="seconds between a worker's heartbeats; a run 3 beats late is retried by another worker")
    return p


def add_outputs(p, results, runs=None, seeds=None, results_default="results"):
    """The options every experiment has, each in words of its own: --results (`results`: what
    goes there), --runs (`runs`: the folder its run folders go to), --seeds ((default, of what))."""
    p.add_argument("--results", default=results_default, help=results)
    if runs:
        p.add_argument("--runs", default="runs", help=f"run folders go to {runs}")
    if seeds:
        p.add_argument("--seeds", type=positive(int), default=seeds[0], help=f"seeds 1..N of {seeds[1]}")


def folders(args):
    """(results folder, runs folder) of the sweep: <results>/<dataset>, <runs>/<dataset>."""
    name = data.label(args.dataset)
    return (Path(args.results) / name).resolve(), Path(args.runs) / name


def names(args):
    """What a study name says of the data and the model: the dataset, and the model if not net."""
    return data.label(args.dataset) + ("" if args.model == "net" else f"-{build.label(args.model)}")


def check_settings(study, args):
    """Every run of a study shares the sweep settings: the first worker sets them. Without
    --precision a sweep takes its own (the committed ones trained in fp32), a new one auto."""
    if args.precision is None:
        stored = study.user_attrs.get("sweep")
        args.precision = stored.get("precision", BEFORE_IT_EXISTED["precision"]) if stored else "auto"
    check_stored(study, "sweep", {key: getattr(args, key) for key in SHARED}, BEFORE_IT_EXISTED)


def check_stored(study, name, wanted, before):
    """The study's user attribute `name` holds what its first worker stored; a later worker
    wanting other values is refused. A key stored only since counts as `before[key]`."""
    stored = study.user_attrs.get(name)
    if stored is None:
        study.set_user_attr(name, wanted)
        return
    for key, value in wanted.items():
        if stored.get(key, before.get(key)) != value:
            raise UsageError(f"the sweep {study.study_name} holds runs made with --{key.replace('_', '-')} "
                             f"{stored.get(key, before.get(key))}, not {value}; use another --results folder")


def cell_config(args, cell, **overrides):
    """The config of one cell of a sweep: the sweep's settings, the cell's width, seed, method
    (plain: no dendrites) and least epochs, then `overrides` (a method's, a configuration's)."""
    sweep = {name: getattr(args, name) for name in sweep_names()}
    sweep["precision"] = sweep["precision"] or "auto"  # None: no study was asked for its own (check_settings)
    config = RunConfig(**sweep, width=cell["width"], seed=cell["seed"], min_epochs=cell["min_epochs"],
                       no_dendrites=cell["method"] == "plain", graph_at_end=True)  # min epochs: plain runs only
    return dataclasses.replace(config, **overrides)


def cell_record(args, cell, run_dir, result):
    """What a sweep records of one cell's run (`result`: its results.json, from run_in)."""
    final = result["final"]
    return {"dataset": args.dataset, "width": cell["width"], "method": cell["method"], "seed": cell["seed"],
            "params": final["params"], "test_acc": final["test_acc"], "val_acc": final["val_acc"],
            "best_epoch": final["best_epoch"], "epochs": final["epochs"], "min_epochs": cell["min_epochs"],
            "dendrite_sets": final["dendrite_sets"], "wall_seconds": final["wall_seconds"],
            "inference_ms": final.get("inference_ms"),  # none where not exported (a search trial)
            "onnx": final.get("onnx"), "int8": final.get("int8"),  # none where the export failed, or not quantized
            "restarts": [r["epoch"] for r in result["restructures"] if r["kind"] != "training complete"],
            "lrs": [row.get("lr") for row in result["history"]],  # each epoch's learning rate
            "precision": result["precision"]["chosen"],  # auto's too
            "run": str(run_dir), "settings": result["settings"],
            "sweep": {key: getattr(args, key) for key in SHARED}}


def run_in(config, run_dir, continue_stopped=True):
    """train_phase2's run of `config` in `run_dir`: the finished one found there, else trained
    there, continued where it stopped unless `continue_stopped` is False (a timed run: from its
    start); returns its record, brought up to date (records.migrate)."""
    config, previous = config.resolved(), read_run(run_dir)
    same = previous is not None and RunConfig.of_record(previous).defining() == config.defining()
    finished = same and previous["status"] == "complete"
    if same and not finished and continue_stopped:  # a worker stopped or vanished
        result = train_phase2.resume(run_dir, threads=config.threads, graph_at_end=True)  # not run settings
    elif finished:
        print(f"{run_dir} holds this run, finished: recording it")
        result = previous
    else:
        if previous is not None:  # another run's (of a study since deleted), or a stopped one not continued
            print(f"{run_dir} holds a run of other settings or stopped: training this one in its place")
            shutil.rmtree(run_dir)
        result = train_phase2.run(config, run_dir)
    return migrate(result)


@contextlib.contextmanager
def images_read_once(args):
    """A worker's block in which your images (folder:, npz:) are read once for all its runs
    (data.held), not checked again file by file for each; a built-in data set is kept for the
    process anyway."""
    reading = build.reading_of(args)
    splits = (data.load(args.dataset, args.data_dir, args.image_size, reading)
              if user_data.is_user_source(args.dataset) else None)
    with data.held(splits, args.dataset, args.data_dir, args.image_size, reading):
        yield


DEPLOYMENT_FIELDS = ("onnx_bytes", "ort_ms_batch1", "ort_ms_batch256", "int8_test_acc", "int8_bytes",
                     "int8_ort_ms_batch1")  # a record's deployment, in a CSV


def deployment_cells(record):
    """A record's DEPLOYMENT_FIELDS; blank where it has none (recorded before ONNX export, or
    not quantized)."""
    onnx, int8 = record["onnx"] or {}, record["int8"] or {}
    return [onnx.get("bytes", ""), onnx.get("ort_ms", {}).get("1", ""), onnx.get("ort_ms", {}).get("256", ""),
            int8.get("test_acc", ""), int8.get("bytes", ""), int8.get("ort_ms", {}).get("1", "")]


@contextlib.contextmanager
def exit_status():
    """A command's run: an error ends it with one line and a non-zero status, and so does a stop
    (a sweep's cell is continued by the next worker to start).

        with exit_status():
            main(get_args_parser().parse_args())
    """
    try:
        yield
    except NeuroShrinkError as e:
        sys.exit(f"error: {e}")
    except (Interrupted, KeyboardInterrupt) as stop:
        print("stopped; start the same command again to continue the sweep", file=sys.stderr)
        sys.exit(128 + getattr(stop, "signum", signal.SIGINT))
