"""NeuroShrink width sweep: can a narrower CNN plus dendrites match a wider plain one?

For every width and seed it trains the dendritic CNN with train_phase2's own run(), then
the plain CNN (--no-dendrites: early stopping with the same patience, and never fewer
epochs than the dendritic run at that width and seed used), on the same splits. The sweep
is an Optuna study (studies.py): start the same command in several processes, or on several
machines with one --storage, and they share the work, each run trained once. A stopped or
killed worker loses nothing: start it again and it continues.

    python -m experiments.width_sweep                     # digits, a few minutes on 2 CPU cores
    python -m experiments.width_sweep --dataset fashion-mnist --widths 0.25 0.125 0.0625 \\
        --patience 3 --max-dendrites 2 --epochs 60        # the Fashion-MNIST reference sweep
    python -m experiments.width_sweep --report-only       # tables and plot from stored runs

Outputs in results/<dataset>/: sweep.db (the Optuna storage: every run's record), runs.csv
(the same records, readable without code), results.md (the tables), neuroshrink.png (our
plot of test accuracy against parameters) and PAI.png (the library's graph of one
representative dendritic run).
"""

import csv
import shutil
import statistics
from pathlib import Path

from experiments.common import studies
from experiments.common.tables import deployment_table, fmt, mean_std, new_figure, save_figure
from experiments.common.runner import (DEPLOYMENT_FIELDS, cell_config, cell_record, check_settings, common_parser,
                                       deployment_cells, exit_status, folders, images_read_once, names, run_in)

METHODS = ("dendritic", "plain")


def get_args_parser():
    p = common_parser("width_sweep", __doc__.split("\n\n")[0])
    p.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.125, 0.0625])
    p.add_argument("--study", default=None,
                   help="study name in the storage (default: neuroshrink-<dataset>, plus -<model> if not net)")
    return p


# ---------------------------------------------------------------- the numbers

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
    model whose mean test accuracy reaches the best plain model's, less its seed spread. None
    before any plain run is recorded (a worker done while the others still train)."""
    plain = {w: row for (w, m), row in rows.items() if m == "plain"}
    if not plain:
        return None
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


def compression_lines(rows, both, summary):
    """The compression table and the smallest models within the best plain model's spread."""
    if summary is None:
        return ["", "No plain run is recorded yet: the compression summary waits for one.", ""]
    best_w = summary["best_plain_width"]
    best = rows[(best_w, "plain")]
    lines = ["", "Compression, in the hackathon's form (percent parameter reduction against the best plain model):", "",
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
    return lines


def tables(dataset, rows, settings, records=()):
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
    lines += compression_lines(rows, both, compression(rows))
    lines += deployment_table([((f"{w:g}", m), [r for r in records if (r["width"], r["method"]) == (w, m)])
                               for w in widths for m in METHODS if (w, m) in rows], "width | method")
    return "\n".join(lines) + "\n"


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
    records = studies.records(study)
    done = {(r["width"], r["method"], r["seed"]) for r in records}
    grid = [(w, m, s) for s in range(1, args.seeds + 1) for w in args.widths for m in METHODS]
    now = [(c["width"], c["method"], c["seed"]) for c in studies.running(study)]
    remaining = [(w, m) for w, m, s in grid if (w, m, s) not in done]
    print(f"\n=== {args.dataset} width {cell['width']:g} {cell['method']} seed {cell['seed']}: sweep "
          f"{len(grid) - len(remaining)} done, {len(now)} running, {len(remaining) - len(now)} waiting"
          f"{time_left(records, remaining, len(now))}", flush=True)


def write_csv(records, path):
    """The records, readable without this code."""
    fields = ("dataset", "width", "method", "seed", "params", "test_acc", "val_acc", "best_epoch", "epochs",
              "min_epochs", "dendrite_sets", "wall_seconds", "run")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields + ("precision",) + DEPLOYMENT_FIELDS)
        for r in records:
            writer.writerow([r[key] for key in fields] + [r["settings"]["precision"]]
                            + deployment_cells(r))


def main(args):
    results_dir, runs_dir = folders(args)
    store = results_dir / "sweep.db"
    if args.report_only and args.storage is None and not store.exists():
        print(f"no stored runs to report in {store}")
        return None
    results_dir.mkdir(parents=True, exist_ok=True)
    study = studies.open_study(args.storage or f"sqlite:///{store}", args.study or f"neuroshrink-{names(args)}",
                               args.heartbeat)

    if args.report_only:
        print(f"report of the {len(studies.records(study))} stored runs")
    else:
        check_settings(study, args)
        grid = [(w, m, s) for s in range(1, args.seeds + 1) for w in args.widths for m in METHODS]
        stored = {(r["width"], r["method"], r["seed"]) for r in studies.records(study)} & set(grid)
        print(f"{len(grid)} runs: {len(stored)} stored, {len(grid) - len(stored)} to train "
              "(by this worker and any other on the same storage)")
        if len(stored) == len(grid):
            print("all stored; to retrain, pass new --results and --runs folders")

        def train(cell):
            announce(args, study, cell)
            name = f"w{cell['width']:g}_{cell['method']}_s{cell['seed']}".replace(".", "p")
            config, run_dir = cell_config(args, cell), runs_dir / name
            record = cell_record(args, cell, run_dir, run_in(config, run_dir))
            return record["val_acc"], record  # what the study records as the trial's value: never test
        with images_read_once(args):  # your images: once for every run of this worker
            studies.work(study, lambda records: cells_for(args, records), train,
                         poll=studies.poll_seconds(args.heartbeat))

    records = studies.records(study)
    rows = summarise(records)
    if not rows:
        print("no stored runs to report")
        return None
    first = records[0]["settings"]
    settings = (f"Settings: patience {first['patience']}, at most {first['max_dendrites']} dendrite sets, "
                f"batch {first['batch_size']}, Adam lr {first['lr']}, precision {first.get('precision', 'fp32')}, "
                f"epoch cap {first['epochs']}; plain runs "
                "early-stop with the same patience but never before the dendritic run's epoch count.")
    report = tables(args.dataset, rows, settings, records)
    (results_dir / "results.md").write_text(report)
    write_csv(records, results_dir / "runs.csv")
    plot(args.dataset, rows, results_dir / "neuroshrink.png")
    representative = (compression(rows) or {}).get("smallest_matching_dendritic_width") or min(w for w, _ in rows)
    pick = next((r for r in records if r["width"] == representative and r["method"] == "dendritic"), None)
    graph = Path(pick["run"]) / f"{Path(pick['run']).name}.png" if pick else None
    if graph and graph.exists():
        shutil.copyfile(graph, results_dir / "PAI.png")
    print("\n" + report)
    print(f"wrote {results_dir}/results.md, runs.csv, neuroshrink.png"
          + (f", PAI.png (from {pick['run']})" if graph and graph.exists() else ""))
    return rows


if __name__ == "__main__":
    with exit_status():
        main(get_args_parser().parse_args())
