"""Trained well, and fast: plain CNNs under the strong recipe against today's best plain CNN
under 100k parameters, and the training time each needs to reach today's accuracy.

The runs, each a plain train_phase2 run (--no-dendrites), seeds 1..--seeds:
  today    net at width 0.25 (75,338 parameters) with the configuration today's search chose
           for it (results/fashion-mnist/search.md: dropout 0.1, Adam at lr 0.00085, cosine
           over 60 epochs, early stopping with patience 5; 91.27 ± 0.11 % test)
  strong   --model compact --recipe strong at each --budgets parameter count
The time-to-accuracy pairs come first, today's and the strong recipe's at the first budget
interleaved seed by seed, so that both are timed on the same machine in one process. For
each run the report gives the training seconds until validation first reached --level, the
validation accuracy today's recipe stopped at (see LEVEL), and its final test accuracy.

Run one worker alone to time the pairs; nothing else may train meanwhile. The budget runs
after them may go to two workers (--worker 1/2 and 2/2, one thread each). Every run has its
own folder under <runs>/<dataset>/recipe/: a stopped worker's run is continued by the next
start, a finished one is never trained again, and each worker rewrites recipe.csv from all
finished runs after each run.

    python -m experiments.strong_recipe --dataset fashion-mnist                  # everything, one worker
    python -m experiments.strong_recipe --dataset fashion-mnist --report-only    # recipe.md and the plot from recipe.csv
"""

import csv
import dataclasses
import os
from pathlib import Path

from experiments.common.runner import add_outputs, exit_status, run_in
from experiments.common.tables import fmt, mean_std, new_figure
from neuroshrink import data
from neuroshrink.config import RunConfig
from neuroshrink.options import add_options, resolved_defaults
from neuroshrink.records import migrate
from neuroshrink.errors import UsageError
from neuroshrink.flags import Parser, positive
from neuroshrink.run_folder import read_run

# Today's recipe: the configuration experiments.search chose for net at width 0.25 on Fashion-MNIST.
TODAY = dict(model="net", width=0.25, dropout=0.1, lr=0.00085, schedule="cosine", epochs=60, patience=5)
# Validation accuracy at the epochs today's three committed runs stopped at (their 91.27 %
# test): 92.13, 92.10, 91.78. The level is the lowest, rounded down, so that every run of
# today's recipe reaches it; the report also gives the test accuracy at the epoch it was reached.
LEVEL = 91.75
FIELDS = ("run", "model", "width", "params", "recipe", "seed", "test_acc", "val_acc", "epochs", "train_seconds",
          "precision", "cpu", "threads", "best_epoch", "level_epoch", "level_seconds", "level_test_acc", "date")


def get_args_parser():
    p = Parser(prog="python -m experiments.strong_recipe", description=__doc__.split("\n\n")[0])
    shared = ["dataset", "data_dir", "precision", "threads", "quick"]  # every run's
    add_options(p, shared, resolved_defaults(shared) | {"dataset": "fashion-mnist", "precision": "auto"})
    p.add_argument("--budgets", type=positive(int), nargs="+", default=[75000, 20000, 5000],
                   help="parameter budgets of the strong recipe's runs; the first is timed against today's")
    p.add_argument("--level", type=positive(float), default=LEVEL,
                   help="validation accuracy %% whose first epoch the time-to-accuracy figures report")
    p.add_argument("--worker", default="1/1", metavar="K/N",
                   help="train every N-th run from the K-th (two workers: 1/2 and 2/2)")
    add_outputs(p, "recipe.csv, recipe.md and the plot go to <results>/<dataset>/", runs="<runs>/<dataset>/recipe/",
                seeds=(3, "every run"))
    p.add_argument("--report-only", action="store_true", help="no training: the report from recipe.csv")
    return p


def plan(args):
    """[(run name, its RunConfig settings)] in training order: the timed pairs, then the budgets."""
    runs = []
    for seed in range(1, args.seeds + 1):
        runs.append((f"today-{seed}", TODAY | {"seed": seed}))
        runs.append((f"strong-{args.budgets[0]}-{seed}", strong(args.budgets[0], seed)))
    for budget in args.budgets[1:]:
        runs += [(f"strong-{budget}-{seed}", strong(budget, seed)) for seed in range(1, args.seeds + 1)]
    return runs


def strong(budget, seed):
    return dict(model="compact", params=budget, recipe="strong", seed=seed)


def worker_share(text, runs):
    """The runs worker K of N trains: every N-th from the K-th."""
    try:
        k, n = (int(part) for part in text.split("/"))
        assert 1 <= k <= n
    except (ValueError, AssertionError):
        raise UsageError(f"--worker {text}: expected K/N with 1 <= K <= N, e.g. 1/2") from None
    return runs[k - 1::n]


def main(args):
    results_dir = Path(args.results) / data.label(args.dataset)
    runs_dir = Path(args.runs) / data.label(args.dataset) / "recipe"
    if not args.report_only:
        common = RunConfig(dataset=args.dataset, data_dir=args.data_dir, no_dendrites=True, precision=args.precision,
                           threads=args.threads, quick=args.quick, graph_at_end=True,
                           test_every_epoch=True)  # the report's test accuracy where validation reached the level
        for name, settings in worker_share(args.worker, plan(args)):
            print(f"=== {name}", flush=True)
            run_in(dataclasses.replace(common, **settings), runs_dir / name)
            write_csv(results_dir / "recipe.csv", finished_rows(args, runs_dir))
    rows = read_csv(results_dir / "recipe.csv")
    report = write_report(rows, args, results_dir)
    print("\n" + report)
    return rows


def finished_rows(args, runs_dir):
    """recipe.csv's rows: one per finished run of the plan, in its order."""
    rows = []
    for name, _ in plan(args):
        run = read_run(runs_dir / name)
        if run and run["status"] == "complete":
            rows.append({"run": name} | row_of(run, args.level))
    return rows


def row_of(run, level):
    """A finished run as a recipe.csv row, with the epoch and training seconds at which its
    validation accuracy first reached `level` (blank if it never did)."""
    run = migrate(run)
    s, history, final = run["settings"], run["history"], run["final"]
    seconds, reached = 0.0, None
    for row in history:
        seconds += row["train_seconds"]
        if row["val_acc"] >= level:
            reached = row
            break
    return {"model": s["model"], "width": s["width"], "params": final["params"], "recipe": s["recipe"],
            "seed": s["seed"], "test_acc": final["test_acc"], "val_acc": round(final["val_acc"], 4),
            "epochs": final["epochs"], "train_seconds": round(sum(r["train_seconds"] for r in history), 1),
            "precision": run["precision"]["chosen"], "cpu": s["cpu"], "threads": s["threads"],
            "best_epoch": final["best_epoch"], "level_epoch": reached["epoch"] if reached else "",
            "level_seconds": round(seconds, 1) if reached else "",
            "level_test_acc": reached["test_acc"] if reached else "", "date": s.get("date", "")}


def write_csv(path, rows):
    """recipe.csv, replaced whole (written aside, then renamed: a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(f".csv.{os.getpid()}")
    with open(part, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    part.replace(path)


def read_csv(path):
    if not path.exists():
        raise UsageError(f"{path} does not exist: no finished run to report")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def groups(rows):
    """{(model, recipe, budget label): rows}, in the rows' order."""
    out = {}
    for r in rows:
        out.setdefault((r["model"], r["recipe"], r["width"]), []).append(r)
    return out


def write_report(rows, args, results_dir):
    level, timed_budget = args.level, args.budgets[0]
    machines = sorted({f"{r['cpu']}, {r['threads']} thread{'' if r['threads'] == '1' else 's'}, {r['date']}"
                       for r in rows})
    lines = ["## The strong recipe against today's", "",
             f"Plain runs on {results_dir.name}, one row per model × recipe × width, mean ± std over seeds; test "
             "accuracy at the epoch validation chose (today's recipe stops early; the strong recipe trains its "
             "fixed 30 epochs). Training seconds exclude evaluation. Measured on: " + "; ".join(machines) + ".", "",
             "| model | recipe | width | params | seeds | test acc % | val acc % | epochs | train minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (model, recipe, width), rs in groups(rows).items():
        num = lambda key: mean_std([float(r[key]) for r in rs])  # noqa: E731
        lines.append(f"| {model} | {recipe} | {float(width):g} | {int(rs[0]['params']):,} | {len(rs)} "
                     f"| {fmt(num('test_acc'))} | {fmt(num('val_acc'))} | {fmt(num('epochs'), 1)} "
                     f"| {fmt((num('train_seconds')[0] / 60, num('train_seconds')[1] / 60), 1)} |")
    lines += ["", *time_to_level(rows, level, timed_budget)]
    report = "\n".join(lines) + "\n"
    (results_dir / "recipe.md").write_text(report)
    plot(rows, results_dir / "recipe.png")
    return report


def time_to_level(rows, level, budget):
    """The timed pairs, seed by seed: training seconds (epoch) until validation first reached
    `level`, their ratio, the test accuracy at that epoch; and the means."""
    today = {r["seed"]: r for r in rows if r["run"].startswith("today-")}
    strong = {r["seed"]: r for r in rows if r["run"].startswith(f"strong-{budget}-")}
    lines = [f"### Time to today's accuracy: validation {level:g} %", "",
             "Training seconds (evaluation excluded) until validation first reached the level, each pair trained "
             "one after the other in one process; the test accuracy at that epoch; the ratio is strong / today.", "",
             "| seed | today: seconds (epoch) | strong: seconds (epoch) | strong / today | today: test acc % then "
             "| strong: test acc % then |", "|---|---|---|---|---|---|"]
    ratios = []

    def reached(r):
        return f"{float(r['level_seconds']):,.0f} ({r['level_epoch']})" if r and r["level_epoch"] else "never"
    for seed in sorted(today.keys() | strong.keys(), key=int):
        a, b = today.get(seed), strong.get(seed)
        ratio = ""
        if a and b and a["level_epoch"] and b["level_epoch"]:
            ratios.append(float(b["level_seconds"]) / float(a["level_seconds"]))
            ratio = f"{ratios[-1]:.2f}"
        lines.append(f"| {seed} | {reached(a)} | {reached(b)} | {ratio} | {(a or {}).get('level_test_acc') or '-'} "
                     f"| {(b or {}).get('level_test_acc') or '-'} |")
    if ratios:
        lines.append(f"| mean | | | {fmt(mean_std(ratios))} | | |")
    return lines


def plot(rows, path):
    """Test accuracy against training minutes, one marker per model × recipe × width (its
    runs' threads in the legend: minutes on one thread are not minutes on two)."""
    import matplotlib.pyplot as plt

    fig, ax = new_figure()
    for (model, recipe, width), rs in groups(rows).items():
        ax.plot([float(r["train_seconds"]) / 60 for r in rs], [float(r["test_acc"]) for r in rs], "o",
                label=f"{model} {recipe}, {int(rs[0]['params']):,} params, threads {'/'.join(sorted({r['threads'] for r in rs}))}")
    ax.set_xlabel("training minutes")
    ax.set_ylabel("test accuracy %")
    ax.set_title("Test accuracy against training time (each point a seed)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    with exit_status():
        main(get_args_parser().parse_args())
