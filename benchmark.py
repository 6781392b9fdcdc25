"""NeuroShrink benchmark: can a narrower CNN plus dendrites match a wider plain one?

For every width and seed it trains the dendritic CNN with train_phase2's own main(), then
the plain CNN (--no-dendrites: early stopping with the same patience, and never fewer
epochs than the dendritic run at that width and seed used), on the same splits. The sweep
is an Optuna study (sweep.py): start the same command in several processes, or on several
machines with one --storage, and they share the work, each run trained once. A stopped or
killed worker loses nothing: start it again and it continues.

    python benchmark.py                                   # digits, a few minutes on 2 CPU cores
    python benchmark.py --dataset fashion-mnist --widths 0.25 0.125 0.0625 0.03125 \\
        --patience 3 --max-dendrites 2                    # the Fashion-MNIST reference sweep
    python benchmark.py --report-only                     # tables and plot from stored runs

Outputs in results/<dataset>/: sweep.db (the Optuna storage: every run's record), runs.csv
(the same records, readable without code), results.md (the tables), neuroshrink.png (our
plot of test accuracy against parameters) and PAI.png (the library's graph of one
representative dendritic run).
"""

import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import sweep
import train_phase2
from run_folder import Interrupted, UsageError, read_run

METHODS = ("dendritic", "plain")
SWEEP_SETTINGS = ("patience", "max_dendrites", "epochs", "precision", "quick")  # every stored run must share these


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits", choices=train_phase2.data.DATASETS)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.125, 0.0625])
    p.add_argument("--seeds", type=int, default=3, help="seeds 1..N for every width and method")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--max-dendrites", type=int, default=3)
    p.add_argument("--epochs", type=int, default=200, help="cap for every run")
    p.add_argument("--results", default="results", help="tables, plot and records go to <results>/<dataset>/")
    p.add_argument("--runs", default="runs", help="run folders go to <runs>/<dataset>/")
    p.add_argument("--report-only", action="store_true", help="no training: report the stored runs")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL shared by the workers (default: sqlite:///<results>/<dataset>/sweep.db; "
                        "postgresql://user@host/db for several machines)")
    p.add_argument("--study", default=None, help="study name in the storage (default: neuroshrink-<dataset>)")
    p.add_argument("--heartbeat", type=train_phase2.positive(int), default=30,
                   help="seconds between a worker's heartbeats; a run 3 beats late is retried by another worker")
    p.add_argument("--threads", type=train_phase2.positive(int), default=None, help="CPU threads per worker (train_phase2 --threads)")
    p.add_argument("--precision", default="fp32", choices=train_phase2.precision.PRECISIONS,
                   help="training precision of every run (train_phase2 --precision)")
    p.add_argument("--wandb", action="store_true", help="log every run to Weights & Biases (train_phase2 --wandb)")
    p.add_argument("--quick", action="store_true", help="train_phase2's smoke-run settings (for tests)")
    return p


# ---------------------------------------------------------------- the numbers

def mean_std(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def remaining_error_reduction(plain_acc, dendritic_acc):
    """RER %: the share of the plain model's error (100 - accuracy) that dendrites remove."""
    return 100.0 * ((100 - plain_acc) - (100 - dendritic_acc)) / (100 - plain_acc)


def parameter_reduction(params, reference_params):
    return 100.0 * (1 - params / reference_params)


def summarise(records):
    """Per (width, method): mean and std over seeds of every number the tables show."""
    groups = {}
    for r in records:
        groups.setdefault((r["width"], r["method"]), []).append(r)
    rows = {}
    for key, rs in groups.items():
        rows[key] = {"n": len(rs), **{f: mean_std([r[f] for r in rs]) for f in
                                      ("test_acc", "params", "dendrite_sets", "epochs", "wall_seconds")}}
    return rows


def compression(rows):
    """The hackathon's compression summary, and the fair question: the smallest dendritic
    model whose mean test accuracy reaches the best plain model's, less its seed spread."""
    plain = {w: row for (w, m), row in rows.items() if m == "plain"}
    best_width = max(plain, key=lambda w: plain[w]["test_acc"][0])
    best = plain[best_width]
    target = best["test_acc"][0] - best["test_acc"][1]

    def smallest(method):
        widths = sorted((row["params"][0], w) for (w, m), row in rows.items()
                        if m == method and row["test_acc"][0] >= target)
        return widths[0][1] if widths else None
    return {"best_plain_width": best_width, "target_acc": target,
            "smallest_matching_dendritic_width": smallest("dendritic"),
            "smallest_matching_plain_width": smallest("plain")}


# ---------------------------------------------------------------- the report

def size_against(params, reference):
    if params <= reference:
        return f"{parameter_reduction(params, reference):.1f}% fewer than the best plain model"
    return f"{params / reference:.1f} times the best plain model's parameters"


def fmt(pair, digits=2):
    return f"{pair[0]:,.{digits}f} ± {pair[1]:,.{digits}f}"


def tables(dataset, rows, settings):
    widths = sorted({w for w, _ in rows}, reverse=True)
    both = [w for w in widths if (w, "plain") in rows and (w, "dendritic") in rows]
    n = sorted({row["n"] for row in rows.values()})
    lines = [f"## {dataset}", "",
             f"Seeds per cell: {', '.join(map(str, n))}. Mean ± std over seeds. Test accuracy at the "
             f"epoch the validation split chose. {settings}", "",
             "| width | plain params | plain test acc % | plain epochs | dendritic params | dendritic test acc % "
             "| dendrite sets kept | dendritic epochs | RER % | plain s | dendritic s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for w in both:
        p, d = rows[(w, "plain")], rows[(w, "dendritic")]
        rer = remaining_error_reduction(p["test_acc"][0], d["test_acc"][0])
        lines.append(f"| {w:g} | {p['params'][0]:,.0f} | {fmt(p['test_acc'])} | {fmt(p['epochs'], 0)} "
                     f"| {fmt(d['params'], 0)} | {fmt(d['test_acc'])} | {fmt(d['dendrite_sets'], 1)} "
                     f"| {fmt(d['epochs'], 0)} | {rer:.1f} | {p['wall_seconds'][0]:.0f} | {d['wall_seconds'][0]:.0f} |")
    summary = compression(rows)
    best_w = summary["best_plain_width"]
    best = rows[(best_w, "plain")]
    lines += ["", "Compression, in the hackathon's form (percent parameter reduction against the best plain model):", "",
              "| model | width | params | test acc % | parameter reduction % |", "|---|---|---|---|---|",
              f"| best plain model | {best_w:g} | {best['params'][0]:,.0f} | {fmt(best['test_acc'])} | 0 |"]
    for w in both:
        if w < best_w:
            for method, label in (("dendritic", "dendritic"), ("plain", "same width, no dendrites")):
                r = rows[(w, method)]
                lines.append(f"| {label} | {w:g} | {r['params'][0]:,.0f} | {fmt(r['test_acc'])} "
                             f"| {parameter_reduction(r['params'][0], best['params'][0]):.1f} |")
    lines.append("")
    for method in ("dendritic", "plain"):
        match = summary[f"smallest_matching_{method}_width"]
        params = rows[(match, method)]["params"][0] if match is not None else None
        lines.append(f"Smallest {method} model within the best plain model's seed spread (mean test acc "
                     f"≥ {summary['target_acc']:.2f}%): " + (
                         f"width {match:g}, {params:,.0f} parameters ({size_against(params, best['params'][0])})."
                         if match is not None else "none."))
        lines.append("")
    return "\n".join(lines) + "\n"


def new_figure():
    """A figure drawn off-screen (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4.5))


def save_figure(fig, ax, path, xlabel, ylabel, title):
    """Accuracy against parameters on a log scale, labelled, saved and closed."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(dataset, rows, path):
    fig, ax = new_figure()
    for method, style in (("plain", "o-"), ("dendritic", "s-")):
        pts = sorted((row["params"][0], row["test_acc"][0], row["test_acc"][1], w)
                     for (w, m), row in rows.items() if m == method)
        if not pts:
            continue
        params, acc, std, widths = zip(*pts)
        ax.errorbar(params, acc, yerr=std, fmt=style, capsize=3, label=method)
        for x, y, w in zip(params, acc, widths):
            ax.annotate(f"{w:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    save_figure(fig, ax, path, "parameters (log scale; labels: width)", "test accuracy % (mean ± std over seeds)",
                f"NeuroShrink on {dataset}: plain CNN vs CNN + dendrites")


# ---------------------------------------------------------------- the sweep

def cells_for(args, records):
    """The sweep's runs: a dendritic run per width and seed, and once it is done, its plain
    pair, which trains for at least as many epochs (so the plain pair is enqueued only then)."""
    seeds = range(1, args.seeds + 1)
    dendritic_epochs = {(r["width"], r["seed"]): r["epochs"] for r in records if r["method"] == "dendritic"}
    return ([{"width": w, "method": "dendritic", "seed": s, "min_epochs": 1} for s in seeds for w in args.widths]
            + [{"width": w, "method": "plain", "seed": s, "min_epochs": dendritic_epochs[(w, s)]}
               for s in seeds for w in args.widths if (w, s) in dendritic_epochs])


def cell_of(record):
    return {key: record[key] for key in ("width", "method", "seed", "min_epochs")}


def time_left(records, remaining, workers):
    """Estimate from the stored runs of the same width and method (else the same method)."""
    def mean_wall(width, method):
        for same in (lambda r: r["width"] == width and r["method"] == method, lambda r: r["method"] == method):
            walls = [r["wall_seconds"] for r in records if same(r)]
            if walls:
                return statistics.fmean(walls)
        return None
    estimates = [mean_wall(w, m) for w, m in remaining]
    if not remaining or None in estimates:
        return ""
    return f"; about {sum(estimates) / 60 / max(workers, 1):.1f} min left with {workers} worker(s)"


def announce(args, study, cell):
    """One line per run: what it is, and where the whole sweep stands."""
    records = sweep.records(study)
    done = {(r["width"], r["method"], r["seed"]) for r in records}
    grid = [(w, m, s) for s in range(1, args.seeds + 1) for w in args.widths for m in METHODS]
    now = [(c["width"], c["method"], c["seed"]) for c in sweep.running(study)]
    remaining = [(w, m) for w, m, s in grid if (w, m, s) not in done]
    print(f"\n=== {args.dataset} width {cell['width']:g} {cell['method']} seed {cell['seed']}: sweep "
          f"{len(grid) - len(remaining)} done, {len(now)} running, {len(remaining) - len(now)} waiting"
          f"{time_left(records, remaining, len(now))}", flush=True)


def run_cell(args, cell, run_dir, extra=()):
    """Train one cell with train_phase2's main() (with `extra` flags); an interrupted run in
    its folder is continued, and a finished one made with the same settings is recorded,
    not trained again."""
    flags = ["--dataset", args.dataset, "--width", str(cell["width"]), "--seed", str(cell["seed"]),
             "--precision", args.precision, "--patience", str(args.patience),
             "--max-dendrites", str(args.max_dendrites), "--epochs", str(args.epochs), "--out", str(run_dir)]
    flags += ["--data-dir", args.data_dir] if args.data_dir else []
    flags += ["--threads", str(args.threads)] if args.threads else []
    flags += ["--quick"] if args.quick else []
    flags += ["--wandb"] if args.wandb else []
    flags += ["--min-epochs", str(cell["min_epochs"]), "--graph-at-end"]  # min epochs: used by plain runs only
    flags += ["--no-dendrites"] if cell["method"] == "plain" else []
    flags += list(extra)
    run_args = train_phase2.parse_args(flags)
    train_phase2.resolve_settings(run_args)  # as results.json records them (--quick's, for one)
    previous = read_run(run_dir)
    same = previous is not None and all(previous["settings"].get(key) == getattr(run_args, key)
                                        for key in train_phase2.RUN_SETTINGS)
    if same and previous["status"] != "complete":  # a worker stopped or vanished
        result = train_phase2.main(train_phase2.parse_args(["--resume", "--graph-at-end", "--out", str(run_dir)]))
    elif same:
        print(f"{run_dir} holds this run, finished: recording it")
        result = previous
    else:
        if previous is not None:  # another run's (of a study since deleted): stopped or finished
            print(f"{run_dir} holds a run of other settings: training this one in its place")
            shutil.rmtree(run_dir)
        result = train_phase2.main(run_args)
    final = result["final"]
    return {"dataset": args.dataset, "width": cell["width"], "method": cell["method"], "seed": cell["seed"],
            "params": final["params"], "test_acc": final["test_acc"], "val_acc": final["val_acc"],
            "best_epoch": final["best_epoch"], "epochs": final["epochs"], "min_epochs": cell["min_epochs"],
            "dendrite_sets": final["dendrite_sets"], "wall_seconds": final["wall_seconds"],
            "inference_ms": final.get("inference_ms"),  # runs from before it was measured have none
            "restarts": [r["epoch"] for r in result["restructures"] if r["kind"] != "training complete"],
            "lrs": [row.get("lr") for row in result["history"]],  # each epoch's learning rate
            "run": str(run_dir), "settings": result["settings"],
            "sweep": {key: getattr(args, key) for key in SWEEP_SETTINGS}}


def import_runs_json(study, path, parser):
    """Move the records of a sweep from before the Optuna storage (runs.json) into the
    study once, without retraining, each marked with the file (and git commit) it came from."""
    if not path.exists() or "imported" in study.user_attrs:
        return
    old = json.loads(path.read_text())
    commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", path.name], cwd=path.parent,
                            capture_output=True, text=True).stdout.strip()
    source = os.path.relpath(path) + (f" at git {commit}" if commit else "")
    for record in old:
        sweep.add_record(study, cell_of(record), record, record["val_acc"], imported_from=source)
    if old:  # records older than a setting were made with its default
        study.set_user_attr("sweep", {key: old[0]["sweep"].get(key, parser.get_default(key))
                                      for key in SWEEP_SETTINGS})
    study.set_user_attr("imported", source)
    print(f"imported {len(old)} records from {source} into the sweep's storage")


def check_settings(study, args):
    """Every run of a study shares the sweep settings: the first worker sets them."""
    stored = study.user_attrs.get("sweep")
    if stored is None:
        study.set_user_attr("sweep", {key: getattr(args, key) for key in SWEEP_SETTINGS})
        return
    for key in SWEEP_SETTINGS:
        if stored[key] != getattr(args, key):
            raise SystemExit(f"error: the sweep {study.study_name} holds runs made with "
                             f"--{key.replace('_', '-')} {stored[key]}, not {getattr(args, key)}; "
                             "use another --results folder (or --study)")


def write_csv(records, path):
    """The records, readable without this code."""
    fields = ("dataset", "width", "method", "seed", "params", "test_acc", "val_acc", "best_epoch", "epochs",
              "min_epochs", "dendrite_sets", "wall_seconds", "run")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields + ("precision",))
        for r in records:
            writer.writerow([r[key] for key in fields] + [r["settings"].get("precision", "fp32")])


def main(args):
    results_dir = (Path(args.results) / args.dataset).resolve()
    runs_dir = Path(args.runs) / args.dataset
    store = results_dir / "sweep.db"
    if args.report_only and args.storage is None and not store.exists() and not (results_dir / "runs.json").exists():
        print(f"no stored runs to report in {store}")
        return None
    results_dir.mkdir(parents=True, exist_ok=True)
    study = sweep.open_study(args.storage or f"sqlite:///{store}", args.study or f"neuroshrink-{args.dataset}",
                             args.heartbeat)
    import_runs_json(study, results_dir / "runs.json", get_args_parser())

    if args.report_only:
        print(f"report of the {len(sweep.records(study))} stored runs")
    else:
        check_settings(study, args)
        grid = [(w, m, s) for s in range(1, args.seeds + 1) for w in args.widths for m in METHODS]
        stored = {(r["width"], r["method"], r["seed"]) for r in sweep.records(study)} & set(grid)
        print(f"{len(grid)} runs: {len(stored)} stored, {len(grid) - len(stored)} to train "
              "(by this worker and any other on the same storage)")
        if len(stored) == len(grid):
            print("all stored; to retrain, pass new --results and --runs folders")

        def train(cell):
            announce(args, study, cell)
            name = f"w{cell['width']:g}_{cell['method']}_s{cell['seed']}".replace(".", "p")
            record = run_cell(args, cell, runs_dir / name)
            return record["val_acc"], record  # what the study records as the trial's value: never test
        sweep.work(study, lambda records: cells_for(args, records), train, poll=min(5, args.heartbeat))

    records = sweep.records(study)
    rows = summarise(records)
    if not rows:
        print("no stored runs to report")
        return None
    first = records[0]["settings"]
    settings = (f"Settings: patience {first['patience']}, at most {first['max_dendrites']} dendrite sets, "
                f"batch {first['batch_size']}, Adam lr {first['lr']}, precision {first.get('precision', 'fp32')}, "
                f"epoch cap {first['epochs']}; plain runs "
                "early-stop with the same patience but never before the dendritic run's epoch count.")
    report = tables(args.dataset, rows, settings)
    (results_dir / "results.md").write_text(report)
    write_csv(records, results_dir / "runs.csv")
    plot(args.dataset, rows, results_dir / "neuroshrink.png")
    representative = compression(rows)["smallest_matching_dendritic_width"] or min(w for w, _ in rows)
    pick = next((r for r in records if r["width"] == representative and r["method"] == "dendritic"), None)
    graph = Path(pick["run"]) / f"{Path(pick['run']).name}.png" if pick else None
    if graph and graph.exists():
        shutil.copyfile(graph, results_dir / "PAI.png")
    print("\n" + report)
    print(f"wrote {results_dir}/results.md, runs.csv, neuroshrink.png"
          + (f", PAI.png (from {pick['run']})" if graph and graph.exists() else ""))
    return rows


def cli(main=main, parser=get_args_parser):
    """Run a worker; errors end it with one line and a non-zero status, and so does a stop
    (its cell is continued by the next worker to start)."""
    args = parser().parse_args()
    try:
        main(args)
    except (UsageError, sweep.StorageError, train_phase2.data.DataError, train_phase2.dendrites.LibraryError) as e:
        sys.exit(f"error: {e}")
    except (Interrupted, KeyboardInterrupt) as stop:
        print("stopped; start the same command again to continue the sweep", file=sys.stderr)
        sys.exit(128 + getattr(stop, "signum", signal.SIGINT))


if __name__ == "__main__":
    cli()
