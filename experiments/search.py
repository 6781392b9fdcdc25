"""Equal tuning: the same hyperparameter search for every method, judged on validation only.

For each width and method, Optuna's TPE sampler chooses N configurations (the same N for
every method), each trained once with seed 0 and scored by its validation accuracy: the
test split never reaches the search. The best configuration is then trained with seeds
1..S and reported on test. With --pareto the width is searched too, and the objective is
validation accuracy against parameters: the report is each method's Pareto front.

    python -m experiments.search --widths 0.125 --trials 20    # digits: 2 methods x 20 trials, then 3 seeds each
    python -m experiments.search --pareto --widths 0.0625 0.5 --trials 30
    python -m experiments.search --dataset fashion-mnist --methods plain --widths 0.25 --trials 4 --epochs 60
    python -m experiments.search --report-only

Like the width sweep, it runs as one worker of a study that any number of workers share
(--storage), and a stopped worker loses nothing. Outputs in results/<dataset>/: the trials
in sweep.db (studies search-*), the tables in search.md (with --pareto: search-pareto.md and search-pareto.png),
and per width the winner by validation, self-contained, in deploy/search/w<width>/ (docs/deploy.md).
"""

from experiments.common import deploy, studies
from experiments.common.runner import (cell_config, cell_record, check_settings, common_parser, exit_status, folders,
                                       images_read_once, names, run_in)
from experiments.common.spaces import SEARCH_SEED, describe, overrides, suggest_dendrites, suggest_recipe
from experiments.common.tables import fmt, mean_std, new_figure, save_figure
from neuroshrink import build, data
from neuroshrink.flags import positive

METHODS = ("dendritic", "plain")


def get_args_parser():
    p = common_parser("search", __doc__.split("\n\n")[0])
    p.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.125, 0.0625])
    p.add_argument("--trials", type=positive(int), default=20,
                   help="configurations tried per method (and width), the same for every method")
    p.add_argument("--pareto", action="store_true",
                   help="search the width too (between the smallest and largest --widths) and report the "
                        "front of validation accuracy against parameters")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                   metavar="METHOD", help=f"which methods to search ({', '.join(METHODS)})")
    return p


def suggest(trial, method, dropout=True):
    """A configuration of the method: its training settings (the dropout where the model has
    dropout layers), and for dendrites how many sets."""
    hp = ({"dropout": trial.suggest_categorical("dropout", [0.1, 0.3, 0.5])} if dropout else {}) | suggest_recipe(trial)
    if method == "dendritic":
        hp |= {"max_dendrites": trial.suggest_int("max_dendrites", 1, 4)} | suggest_dendrites(trial)
    return hp


def has_dropout(args):
    """Whether the model has nn.Dropout layers, whose rate the search tunes (built on the data's shape)."""
    shape = build.data_shape(data.load(args.dataset, args.data_dir, args.image_size, build.reading_of(args)))
    return bool(build.dropout_layers(build.model_factory(args.model)(width=1.0, **shape)))


def study_name(args, method, width=None, stage="search"):
    return f"{stage}-{names(args)}-{method}" + (f"-w{width:g}" if width is not None else "-pareto")


def search_method(args, url, method, width, runs, dropout=True):
    """N trials of the method at the width (or over widths, --pareto), the dropout rate among
    what they draw where `dropout` (the model has dropout layers); returns the study."""
    directions = ("maximize", "minimize") if args.pareto else ("maximize",)
    if args.report_only and not studies.study_exists(url, study_name(args, method, width)):
        return None  # nothing searched there: report, but leave the storage as it is
    study = studies.open_study(url, study_name(args, method, width), args.heartbeat, directions)
    if not args.report_only:
        check_settings(study, args)
        study.set_user_attr("trials", args.trials)  # what a report of this study counts
    low, high = min(args.widths), max(args.widths)

    def train(trial, name):
        hp = suggest(trial, method, dropout)
        if args.pareto:
            hp["width"] = trial.suggest_float("width", low, high, log=True)
        cell = {"width": hp.get("width", width), "method": method, "seed": SEARCH_SEED, "min_epochs": 1}
        print(f"\n=== search {study.study_name} {name}: {hp}", flush=True)
        config, run_dir = cell_config(args, cell, **overrides(hp)), runs / study.study_name / name
        record = cell_record(args, cell, run_dir, run_in(config, run_dir))
        record = {key: value for key, value in record.items() if key != "test_acc"} | {"hp": hp}  # never seen
        objective = (record["val_acc"], record["params"]) if args.pareto else record["val_acc"]
        return objective, record
    if not args.report_only:
        studies.search(study, args.trials, train, poll=studies.poll_seconds(args.heartbeat))
    return study


def searched(study):
    """The study's trials that count: the first `trials` finished (later ones are surplus of a race)."""
    return studies.finished(study)[:study.user_attrs["trials"]]


def best_of(study):
    return max(searched(study), key=lambda t: t.value)


def retrain_best(args, url, method, width, search_study, runs):
    """The best configuration, trained with seeds 1..S; returns their records (with test)."""
    hp = best_of(search_study).user_attrs["record"]["hp"]
    study = studies.open_study(url, study_name(args, method, width, "best"), args.heartbeat)
    if not args.report_only:
        check_settings(study, args)

    def train(cell):
        print(f"\n=== best {method} width {width:g} seed {cell['seed']}: {hp}", flush=True)
        config, run_dir = cell_config(args, cell, **overrides(hp)), runs / study.study_name / f"s{cell['seed']}"
        record = cell_record(args, cell, run_dir, run_in(config, run_dir))
        return record["val_acc"], record | {"hp": hp}
    cells = [{"width": width, "method": method, "seed": s, "min_epochs": 1} for s in range(1, args.seeds + 1)]
    if not args.report_only:
        studies.work(study, lambda records: cells, train, poll=studies.poll_seconds(args.heartbeat))
    return studies.records(study)


def best_table(args, results):
    lines = [f"## Equal tuning on {args.dataset}", "",
             f"TPE trials per method and width on the validation split (seed {SEARCH_SEED}); the best "
             "configuration then trained with seeds 1, 2, ... and tested. Mean ± std over those seeds.", "",
             "| width | method | trials | best configuration | search val acc % | test acc % | seeds | params | epochs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (width, method), (best, trials, records) in results.items():
        if not records:  # its retraining has not run yet
            continue
        test = mean_std([r["test_acc"] for r in records])
        params = mean_std([r["params"] for r in records])
        epochs = mean_std([r["epochs"] for r in records])
        lines.append(f"| {width:g} | {method} | {trials} | {describe(best.user_attrs['record']['hp'])} "
                     f"| {best.value:.2f} | {fmt(test)} | {len(records)} | {fmt(params, 0)} "
                     f"| {fmt(epochs, 0)} |")
    return "\n".join(lines) + "\n"


def pareto_table(args, fronts):
    lines = [f"## Validation accuracy against parameters on {args.dataset}", "",
             f"Multi-objective TPE trials per method, the width searched too (seed {SEARCH_SEED}); each method's "
             "Pareto front, validation accuracy only.", "",
             "| method | width | params | val acc % | configuration |", "|---|---|---|---|---|"]
    for method, front in fronts.items():
        for t in sorted(front, key=lambda t: t.values[1]):
            hp = t.user_attrs["record"]["hp"]
            lines.append(f"| {method} | {hp['width']:.3g} | {t.values[1]:,.0f} | {t.values[0]:.2f} "
                         f"| {describe({k: v for k, v in hp.items() if k != 'width'})} |")
    return "\n".join(lines) + "\n"


def plot_fronts(args, by_method, path):
    fig, ax = new_figure()
    lowest = 100.0
    for i, (method, study) in enumerate(by_method.items()):
        trials = searched(study)
        ax.scatter([t.values[1] for t in trials], [t.values[0] for t in trials], s=12, alpha=0.35, color=f"C{i}")
        front = sorted(pareto_front(trials), key=lambda t: t.values[1])
        ax.plot([t.values[1] for t in front], [t.values[0] for t in front], "o-", color=f"C{i}",
                label=f"{method}: front of {len(trials)} trials")
        lowest = min([lowest] + [t.values[0] for t in front])
    ax.set_ylim(lowest - 5, 100)  # trials far below every front are cut off
    save_figure(fig, ax, path, "parameters (log scale)", f"validation accuracy % (seed {SEARCH_SEED})",
                          f"Search on {args.dataset}: every trial, and each method's Pareto front")


def pareto_front(trials):
    """The trials no other trial beats in both accuracy (higher) and parameters (fewer)."""
    return [t for t in trials if not any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1]
                                         and o.values != t.values for o in trials)]


def ship_winners(args, results, results_dir):
    """Per width whose every method has every seed, the winner by validation (the method with the
    best mean validation accuracy, its best-validation seed), shipped self-contained to
    <results>/<dataset>/deploy/search/w<width>/ (experiments/common/deploy.py)."""
    rows = [{"budget": width, "about": {"width": width}, "method": method, "records": records, "n": len(records),
             "hp": best.user_attrs["record"]["hp"]} for (width, method), (best, _, records) in results.items()]
    if not rows:
        return
    splits = data.load(args.dataset, args.data_dir, args.image_size, build.reading_of(args))
    shipped = deploy.winners(rows, splits, None, None, results_dir / "deploy" / "search", "search", args.seeds,
                             named=lambda width: f"width {width:g}", folder_of=lambda width: f"w{width:g}")
    for width, (row, record, folder) in shipped.items():
        print(f"width {width:g}: use {row['method']} (the best on validation), seed {record['seed']}"
              + (f": ship {folder}/" if folder else ""))


def main(args):
    results_dir, runs = folders(args)
    results_dir.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///{results_dir / 'sweep.db'}"
    with images_read_once(args):  # your images: once for every trial and seed of this worker
        dropout = not args.report_only and has_dropout(args)  # (a report trains nothing)
        if args.pareto:
            by_method = {m: search_method(args, url, m, None, runs, dropout) for m in args.methods}
            by_method = {m: study for m, study in by_method.items() if study is not None}
            fronts = {m: pareto_front(searched(s)) for m, s in by_method.items()}
            report = pareto_table(args, fronts)
            plot_fronts(args, by_method, results_dir / "search-pareto.png")
        else:
            results = {}
            for width in args.widths:
                for method in args.methods:
                    study = search_method(args, url, method, width, runs, dropout)
                    if study is not None and studies.finished(study):
                        results[(width, method)] = (best_of(study), len(searched(study)),
                                                    retrain_best(args, url, method, width, study, runs))
            report = best_table(args, results)
            ship_winners(args, results, results_dir)
    name = "search-pareto" if args.pareto else "search"
    (results_dir / f"{name}.md").write_text(report)
    print("\n" + report)
    print(f"wrote {results_dir}/{name}.md" + (", search-pareto.png" if args.pareto else ""))
    return report


if __name__ == "__main__":
    with exit_status():
        main(get_args_parser().parse_args())
