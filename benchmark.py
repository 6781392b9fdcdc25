"""NeuroShrink benchmark: can a narrower CNN plus dendrites match a wider plain one?

For every width and seed it trains the dendritic CNN with train_phase2's own main(), then
the plain CNN (--no-dendrites: early stopping with the same patience, and never fewer
epochs than the dendritic run at that width and seed used), on the same splits. Each run
is stored as soon as it finishes, so an interrupted sweep continues where it stopped (an
interrupted run is resumed) and a finished one is re-reported without training.

    python benchmark.py                                   # digits, a few minutes on 2 CPU cores
    python benchmark.py --dataset fashion-mnist --widths 0.25 0.125 0.0625 0.03125 \\
        --patience 3 --max-dendrites 2                    # the Fashion-MNIST reference sweep
    python benchmark.py --report-only                     # tables and plot from stored runs

Outputs in results/<dataset>/: runs.json (one record per run), results.md (the tables),
neuroshrink.png (our plot of test accuracy against parameters) and PAI.png (the library's
graph of one representative dendritic run).
"""

import argparse
import json
import shutil
import statistics
from pathlib import Path

import train_phase2
from run_folder import read_run, write_json

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


def plot(dataset, rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, style in (("plain", "o-"), ("dendritic", "s-")):
        pts = sorted((row["params"][0], row["test_acc"][0], row["test_acc"][1], w)
                     for (w, m), row in rows.items() if m == method)
        if not pts:
            continue
        params, acc, std, widths = zip(*pts)
        ax.errorbar(params, acc, yerr=std, fmt=style, capsize=3, label=method)
        for x, y, w in zip(params, acc, widths):
            ax.annotate(f"{w:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale; labels: width)")
    ax.set_ylabel("test accuracy % (mean ± std over seeds)")
    ax.set_title(f"NeuroShrink on {dataset}: plain CNN vs CNN + dendrites")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- the sweep

def time_left(records, remaining):
    """Estimate from the stored runs of the same width and method (else the same method)."""
    def mean_wall(width, method):
        for same in (lambda r: r["width"] == width and r["method"] == method, lambda r: r["method"] == method):
            walls = [r["wall_seconds"] for r in records if same(r)]
            if walls:
                return statistics.fmean(walls)
        return None
    estimates = [mean_wall(w, m) for w, m, _ in remaining]
    if None in estimates:
        return ""
    return f" ({len(remaining) - 1} after this; about {sum(estimates) / 60:.1f} min left)"


def run_cell(args, width, method, seed, run_dir, min_epochs):
    flags = ["--dataset", args.dataset, "--width", str(width), "--seed", str(seed), "--precision", args.precision,
             "--patience", str(args.patience), "--max-dendrites", str(args.max_dendrites),
             "--epochs", str(args.epochs), "--out", str(run_dir)]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    if args.quick:
        flags.append("--quick")
    if args.wandb:
        flags.append("--wandb")
    if method == "plain":
        flags += ["--no-dendrites", "--min-epochs", str(min_epochs)]
    previous = read_run(run_dir)
    if previous is not None and previous["status"] != "complete":  # interrupted: continue it
        flags = ["--resume", "--out", str(run_dir)]
    elif previous is not None:
        shutil.rmtree(run_dir)  # finished but never recorded: run it again, whole
    result = train_phase2.main(train_phase2.parse_args(flags))
    final = result["final"]
    return {"dataset": args.dataset, "width": width, "method": method, "seed": seed,
            "params": final["params"], "test_acc": final["test_acc"], "val_acc": final["val_acc"],
            "best_epoch": final["best_epoch"], "epochs": final["epochs"], "min_epochs": min_epochs,
            "dendrite_sets": final["dendrite_sets"], "wall_seconds": final["wall_seconds"],
            "run": str(run_dir), "settings": result["settings"],
            "sweep": {key: getattr(args, key) for key in SWEEP_SETTINGS}}


def main(args):
    results_dir = Path(args.results) / args.dataset
    runs_dir = Path(args.runs) / args.dataset
    results_dir.mkdir(parents=True, exist_ok=True)
    records_path = results_dir / "runs.json"
    records = json.loads(records_path.read_text()) if records_path.exists() else []
    done = {(r["width"], r["method"], r["seed"]): r for r in records}
    if records and not args.report_only:
        parser = get_args_parser()  # records older than a setting were made with its default
        stored = {key: records[0]["sweep"].get(key, parser.get_default(key)) for key in SWEEP_SETTINGS}
        for key in SWEEP_SETTINGS:
            if stored[key] != getattr(args, key):
                raise SystemExit(f"error: {records_path} holds runs made with --{key.replace('_', '-')} "
                                 f"{stored[key]}, not {getattr(args, key)}; use another --results folder")

    cells = [(w, m, s) for s in range(1, args.seeds + 1) for w in args.widths for m in METHODS]
    todo = [] if args.report_only else [c for c in cells if c not in done]
    if args.report_only:
        print(f"report of the {len(records)} stored runs")
    else:
        print(f"{len(cells)} runs: {len(cells) - len(todo)} stored, {len(todo)} to train")
        if not todo:
            print(f"all stored in {records_path}; to retrain, pass new --results and --runs folders")
    for i, (width, method, seed) in enumerate(todo, 1):
        print(f"\n=== run {i}/{len(todo)}: {args.dataset} width {width:g} {method} seed {seed}"
              f"{time_left(records, todo[i - 1:])}", flush=True)
        min_epochs = done[(width, "dendritic", seed)]["epochs"] if method == "plain" else 1
        name = f"w{width:g}_{method}_s{seed}".replace(".", "p")
        record = run_cell(args, width, method, seed, runs_dir / name, min_epochs)
        records.append(record)
        done[(width, method, seed)] = record
        write_json(records_path, records)

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
    plot(args.dataset, rows, results_dir / "neuroshrink.png")
    representative = compression(rows)["smallest_matching_dendritic_width"] or min(w for w, _ in rows)
    pick = next((r for r in records if r["width"] == representative and r["method"] == "dendritic"), None)
    graph = Path(pick["run"]) / f"{Path(pick['run']).name}.png" if pick else None
    if graph and graph.exists():
        shutil.copyfile(graph, results_dir / "PAI.png")
    print("\n" + report)
    print(f"wrote {results_dir}/results.md, neuroshrink.png, runs.json"
          + (f", PAI.png (from {pick['run']})" if graph and graph.exists() else ""))
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
