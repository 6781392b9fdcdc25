"""experiments.shrink's report, either recipe: write() gives <name>.md (the answer in words on
top, then the tables), .csv, .png (test accuracy against size) and -budgets.png (per budget, the
methods sorted by accuracy).

Every method's row is followed by its int8 row where its runs were quantized: the same runs'
final models (same seeds, same weights) quantized by ONNX Runtime (static, QDQ, per-channel int8
weights, calibrated on training images, no retraining). Bytes are the sizes of each run's
model.onnx and model.int8.onnx, recorded when the run wrote them (blank for runs recorded before
ONNX export existed). Milliseconds come from one timing pass (kept_runs.time_inference) over
every final model, one after another in one process on one thread, nothing else running; the
latency file names its CPU and date (the default recipe keeps no models to time, so its
reports have none: a timing taken as each run ended, beside another worker's training, would
not compare).
"""

import csv
import statistics
from collections import Counter

from experiments.common import spaces
from experiments.common.kept_runs import KINDS, read_latency
from experiments.common.tables import fmt, mean_std
from experiments.shrink.methods import BY_NAME, METHODS

# ---------------------------------------------------------------- rows: a method's fp32 and int8

def method_rows(args, results, wide_records):
    """Per budget and method: the records of its seed runs."""
    wide_minutes = sum(r["wall_seconds"] for r in wide_records if r["seed"] > 0) / 60 / max(args.seeds, 1)
    rows = []
    order = [m.name for m in sorted(METHODS, key=lambda m: m.plain)]  # dendritic methods first, as they train
    for budget, by_method in results.items():
        for name, (records, undecided) in sorted(by_method.items(), key=lambda item: order.index(item[0])):
            if records:
                rows.append({"budget": budget, "method": name, "n": len(records), "records": records,
                             "test_acc": [r["test_acc"] for r in records], "hp": records[0]["hp"],
                             "undecided": undecided, "wide_minutes": wide_minutes if BY_NAME[name].wide else 0.0})
    return rows


def kind_rows(rows, latency):
    """Each method's row as two: fp32 (the trained model) and int8 (its quantized copy, where its
    runs were quantized), with the numbers of their seed runs; bytes of the runs that exported
    ONNX (none for runs recorded before it existed)."""
    timed = (latency or {}).get("runs", {})
    out = []
    for row in sorted(rows, key=lambda r: r["budget"]):
        for kind, key, _ in KINDS:
            records = row["records"] if kind == "fp32" else [r for r in row["records"] if r.get(key)]
            if not records:
                continue
            times = [timed[r["run"]][kind] for r in records if r["run"] in timed]
            out.append({"budget": row["budget"], "method": row["method"], "kind": kind, "n": len(records),
                        "test_acc": [r["test_acc"] if kind == "fp32" else r["int8"]["test_acc"] for r in records],
                        "params": [r["params"] for r in records],
                        "bytes": [r[key]["bytes"] for r in records if r.get(key)],
                        "ms1": [t["1"] for t in times], "ms256": [t["256"] for t in times],
                        "minutes": [r["wall_seconds"] / 60 for r in records], "wide_minutes": row["wide_minutes"],
                        "cpus": [r["settings"]["cpu"] for r in records], "precisions": [r["precision"] for r in records],
                        "epochs": [r["epochs"] for r in records], "hp": row["hp"], "undecided": row["undecided"]})
    return out


def label(row):
    return row["method"] + (" int8" if row["kind"] == "int8" else "")


def mean(values):
    return statistics.fmean(values)


def kb(values):
    return f"{mean(values) / 1000:,.1f}" if values else ""


def minutes(value):
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"  # a digits run takes seconds


def undecided_note(accuracy):
    if accuracy is None:
        return ""
    return f" (search undecided: every trial {accuracy:.2f} % on validation, so the first drawn was kept)"


# ---------------------------------------------------------------- the report

def how_tuned(args):
    """The report's first paragraph: how every method was trained and tuned, per recipe."""
    if args.recipe != "strong":
        return (f"Each method tuned with {args.trials} search trial{'s' if args.trials > 1 else ''} on validation "
                "(seed 0): Optuna's TPE, or where "
                "the space is a finite set (the library recipes' methods) as many distinct configurations in random "
                "order, all of them if fewer; a restart control takes its plain recipe's choice, matched the "
                f"dendritic search's. Then seeds 1-{args.seeds} of its choice, tested; mean ± std over those seeds. "
                "Parameters: the library's count for dendritic models, the dense count otherwise.")
    return (f"Every run: the strong recipe; a dendritic run adds its set after a {args.schedule_epochs}-epoch "
            f"schedule and trains another, the others train the same seed's dendritic epochs. Each method tuned "
            f"by {args.trials} search trial{'s' if args.trials > 1 else ''} ("
            + (f"{args.random_trials} random, then TPE" if args.trials > args.random_trials else "drawn at random")
            + ("; the dendritic search could also choose weight decay 0" if args.allow_zero_decay else "")
            + ") on validation, seed 0, "
            + ("the dendritic searches also drawing what the library's maintainer sets: where the dendrites go and "
               "how many sets (every layout that meets the budget with all the sets it may add), the learning rate "
               "after a restructure (1 or 10 times) and the plateau before a switch (as each schedule ends, or after "
               "3 or 6 epochs without improvement), their controls replaying the same epochs, restarts and "
               "learning rates; " if args.maintainer else "")
            + f"each on a schedule of {args.search_epochs} epochs"
            + (f" and the first {args.search_images:,} training images" if args.search_images else "")
            + " for every method; then seeds 1-" + f"{args.seeds} of its choice, tested: mean ± std over those "
            "seeds.")


def table(args, rows, wide_records, latency, searched=None):
    """The report (markdown): every method and its int8 copy at every budget, then the accuracy
    by budget, then the best per budget and what is within its spread."""
    strong = args.recipe == "strong"
    lines = [f"## Which method shrinks a CNN best{', trained well' if strong else ''}? {args.dataset}, {args.model}"
             + (", strong recipe" if strong else ""), "",
             how_tuned(args)
             + (" int8: the same runs' final models, quantized (ONNX Runtime static QDQ, per-channel, calibrated on "
                "training images, no retraining)." if any(r["kind"] == "int8" for r in rows) else "")
             + (" kB: the ONNX file's size (1 kB = 1,000 bytes)." if any(r["bytes"] for r in rows) else
                " kB: none, these runs were recorded before ONNX export existed."), ""]
    if latency:
        lines += [f"Milliseconds: ONNX Runtime {latency['onnxruntime']}, one thread, median per forward pass, every "
                  f"model timed one after another in one pass on the {latency['cpu']}, {latency['date']}.", ""]
    elif strong:
        lines += ["Milliseconds: not yet timed (`--time-inference`).", ""]
    else:
        lines += ["Milliseconds: none (the default recipe keeps no models for a timing pass; `--recipe strong` "
                  "does).", ""]
    if searched:  # a best drawn near the end says the search may not have settled
        lines += ["Where each dendritic search found its best: " + "; ".join(
            f"{method} at {budget:,}: trial {trial} of {trials}" for (method, budget), (trial, trials) in searched.items())
            + ".", ""]
    wide = [r for r in wide_records if r["seed"] > 0]
    fp32_rows = [r for r in rows if r["kind"] == "fp32"]
    lines += [training_machines([c for r in fp32_rows for c in r["cpus"]] + [r["settings"]["cpu"] for r in wide],
                                [p for r in fp32_rows for p in r["precisions"]] + [r["precision"] for r in wide]), ""]
    if wide:
        lines += [f"The wide model (plain, width {args.wide:g}, {fmt(mean_std([r['params'] for r in wide]), 0)} "
                  f"parameters) pruned and distilled from: test {fmt(mean_std([r['test_acc'] for r in wide]))} %, "
                  f"{fmt(mean_std([r['wall_seconds'] / 60 for r in wide]), 1 if strong else 2)} training minutes "
                  "per seed, added to those methods' training.", ""]
    lines += ["| budget | method | test acc % | params | kB | ms, batch 1 | ms, batch 256 | training min | epochs "
              "| seeds | configuration |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        spent = minutes(mean(row["minutes"])) + (f" + {minutes(row['wide_minutes'])}" if row["wide_minutes"] else "")
        ms = (f"{statistics.median(row['ms1']):.3f}", f"{statistics.median(row['ms256']):.2f}") if row["ms1"] else ("", "")
        config = ("the same runs, quantized" if row["kind"] == "int8" else
                  spaces.describe(row["hp"]) + undecided_note(row["undecided"]))
        lines.append(f"| {row['budget']:,} | {label(row)} | {fmt(mean_std(row['test_acc']))} "
                     f"| {mean(row['params']):,.0f} | {kb(row['bytes'])} | {ms[0]} | {ms[1]} | {spent} "
                     f"| {mean(row['epochs']):.0f} | {row['n']} | {config} |")
    budgets = sorted({r["budget"] for r in rows})
    cell = {(label(r), r["budget"]): r for r in rows}
    lines += ["", "Test accuracy % by budget (mean ± std over seeds" + ("; kB in brackets" if any(r["bytes"] for r in rows)
                                                                         else "") + "):", "",
              "| method | " + " | ".join(f"{b:,}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for name in dict.fromkeys(label(r) for r in rows):
        lines.append(f"| {name} | " + " | ".join(
            fmt(mean_std(cell[name, b]["test_acc"])) + (f" ({kb(cell[name, b]['bytes'])})" if cell[name, b]["bytes"]
                                                        else "") if (name, b) in cell else ""
            for b in budgets) + " |")
    lines += ["", "Best mean test accuracy per budget, what is within one standard deviation of it"
              + (", and the fewest bytes among those:" if any(r["bytes"] for r in rows) else ":"), ""]
    for budget in budgets:
        lines.append(f"- {budget:,}: " + best_line(args, [r for r in rows if r["budget"] == budget]))
    return "\n".join(lines) + "\n"


def training_machines(cpus, precisions):
    """Where and in what the training minutes were measured: a sweep continued on another machine
    mixes CPUs, and minutes compare only between runs on one CPU; a study begun when --precision
    auto chose for each run mixes precisions (a study chooses one for all its runs since)."""
    counts = Counter(cpus).most_common()
    where = " and ".join(f"{f'the {cpu}' if cpu else 'an unrecorded CPU'} ({n} run{'s' * (n > 1)})"
                         for cpu, n in counts)
    trained = Counter(precisions).most_common()
    how = (f"trained in {trained[0][0]}" if len(trained) == 1 else "trained in " + " and ".join(
        f"{name} ({n} run{'s' * (n > 1)})" for name, n in trained) + ", as --precision auto chose for each run")
    return (f"Training minutes: each seed run's wall clock, on {where}, {how}"
            + ("; they compare only between runs on one CPU." if len(counts) > 1 else "."))


def best_line(args, at):
    complete = {r["method"] for r in at if r["n"] == args.seeds and r["kind"] == "fp32"}
    if len(complete) < len(args.methods):  # a sweep still running: no verdict from part of it
        return f"not all in yet ({len(complete)} of {len(args.methods)} methods with every seed); no verdict"
    best = max(at, key=lambda r: mean(r["test_acc"]))
    floor = mean(best["test_acc"]) - mean_std(best["test_acc"])[1]
    near = [r for r in at if r is not best and mean(r["test_acc"]) >= floor]
    sized = [r for r in (best, *near) if r["bytes"]]  # (none for runs recorded before ONNX export)
    smallest = min(sized, key=lambda r: mean(r["bytes"])) if sized else best
    return (f"**{label(best)}** {fmt(mean_std(best['test_acc']))} %" + (f" ({kb(best['bytes'])} kB)" if best["bytes"] else "")
            + (f"; within its spread: {', '.join(label(r) for r in near)}" if near else "; nothing else within its spread")
            + (f"; fewest bytes among them: **{label(smallest)}** {mean(smallest['test_acc']):.2f} % "
               f"({kb(smallest['bytes'])} kB)" if smallest is not best else ""))


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["budget", "method", "precision", "seed_runs", "test_acc_mean", "test_acc_std", "params_mean",
                         "bytes_mean", "ort_ms_batch1", "ort_ms_batch256", "training_minutes", "wide_minutes",
                         "epochs_mean", "configuration"])
        for r in rows:
            acc, std = mean_std(r["test_acc"])
            writer.writerow([r["budget"], r["method"], r["kind"], r["n"], round(acc, 3), round(std, 3),
                             round(mean(r["params"])), round(mean(r["bytes"])) if r["bytes"] else "",
                             round(statistics.median(r["ms1"]), 4) if r["ms1"] else "",
                             round(statistics.median(r["ms256"]), 3) if r["ms256"] else "",
                             round(mean(r["minutes"]), 3), round(r["wide_minutes"], 3), round(mean(r["epochs"]), 1),
                             spaces.describe(r["hp"])])


# ---------------------------------------------------------------- the plots

def plot_size(args, rows, path):
    """Test accuracy against size, one marker and colour per method: fp32 filled, int8 hollow,
    each pair joined by a thin line; methods of the same size nudged apart sideways. The size is
    the ONNX file's kB, or the parameters where a run was recorded before ONNX export."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    in_kb = all(r["bytes"] for r in rows)
    fig, ax = plt.subplots(figsize=(9.5, 5))
    colors, markers = plt.rcParams["axes.prop_cycle"].by_key()["color"], "osD^v<>ph*"
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for i, method in enumerate(methods):
        nudge = 1 + 0.025 * (i - (len(methods) - 1) / 2)
        style = dict(color=colors[i % len(colors)], marker=markers[i % len(markers)], capsize=3, linestyle="none")
        for budget in sorted({r["budget"] for r in rows}):
            pair = {r["kind"]: r for r in rows if r["method"] == method and r["budget"] == budget}
            points = {kind: (nudge * (mean(r["bytes"]) / 1000 if in_kb else mean(r["params"])), *mean_std(r["test_acc"]))
                      for kind, r in pair.items()}
            if len(points) == 2:
                ax.plot(*zip(*[p[:2] for p in points.values()]), color=style["color"], linewidth=0.8, alpha=0.6)
            for kind, (x, y, err) in points.items():
                ax.errorbar(x, y, yerr=err, markerfacecolor="none" if kind == "int8" else style["color"],
                            label=f"{method} ({kind})" if budget == min(r["budget"] for r in rows
                                                                       if r["method"] == method) else None, **style)
    ax.set_xscale("log")
    for axis in (ax.xaxis,):
        axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if f"{x:g}"[0] in "25" else ""))
    ax.set_xlabel(("model size, kB (the ONNX file" if in_kb else "parameters (") + "; log scale; methods of one size "
                  "nudged apart)")
    ax.set_ylabel("test accuracy % (mean ± std over seeds)")
    ax.set_title(f"{args.dataset}, {args.model}, {args.recipe} recipe: filled fp32, hollow int8 of the same runs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_budgets(args, rows, path):
    """Per budget, a dot plot: every method and its int8 copy, sorted by mean test accuracy
    (the best on top), with its spread; kB beside each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["budget"] for r in rows})
    columns = min(3, len(budgets))
    lines = -(-len(budgets) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.6 * columns, 3.6 * lines + 0.6), squeeze=False)
    for ax, budget in zip(axes.flat, budgets):
        at = sorted((r for r in rows if r["budget"] == budget), key=lambda r: mean(r["test_acc"]))
        for y, r in enumerate(at):
            acc, std = mean_std(r["test_acc"])
            ax.errorbar(acc, y, xerr=std, fmt="o", color="tab:blue" if r["kind"] == "fp32" else "tab:orange",
                        markerfacecolor="none" if r["kind"] == "int8" else None, capsize=3)
            if r["bytes"]:
                ax.annotate(f" {kb(r['bytes'])} kB", (acc + std, y), fontsize=7, va="center")
        ax.set_yticks(range(len(at)), [label(r) for r in at], fontsize=8)
        ax.set_title(f"{budget:,} parameters")
        ax.set_xlabel("test accuracy %")
        ax.grid(True, axis="x", alpha=0.3)
        ax.margins(x=0.25)
    for ax in list(axes.flat)[len(budgets):]:
        ax.axis("off")
    fig.suptitle(f"{args.dataset}, {args.model}, {args.recipe} recipe: methods by accuracy "
                 "(blue fp32, hollow orange int8; mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(args, rows, wide_records, results_dir, name, answer="", searched=None):
    """The report's files in results_dir: <name>.md (`answer` on top), .csv, .png, -budgets.png;
    returns (the report, the names written). `searched`: {(method, budget): (trial, trials)},
    where each dendritic search found its best (said under the strong recipe)."""
    latency = read_latency(results_dir / f"{name}-latency.json")
    both = kind_rows(rows, latency)
    text = answer + ("\n" if answer else "") + table(args, both, wide_records, latency, searched)
    (results_dir / f"{name}.md").write_text(text)
    write_csv(both, results_dir / f"{name}.csv")
    plot_size(args, both, results_dir / f"{name}.png")
    plot_budgets(args, both, results_dir / f"{name}-budgets.png")
    return text, [f"{name}.md", f"{name}.csv", f"{name}.png", f"{name}-budgets.png"]
