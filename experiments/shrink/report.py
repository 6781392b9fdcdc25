"""experiments.shrink's report, either recipe: write() gives <name>.md (the answer in words on
top, then the tables), .csv and the plots. Under the default recipe (and the library's
recipes) the tables, the plot of accuracy against parameters and the CSV are here; under the
strong recipe, counted in bytes, int8 and milliseconds, they are experiments/shrink/verdict.py's."""

import csv
import statistics

from experiments.common import spaces, tables
from experiments.common.tables import deployment_table, mean_std
from experiments.shrink import verdict
from experiments.shrink.methods import BY_NAME, DEFAULT_METHODS, DENDRITIC_STUDENT, METHODS


def write(args, rows, wide_records, results_dir, name, answer, searched=None):
    """The report's files in results_dir; returns (the report, the names written). `searched`:
    where each dendritic search found its best (shrink_studies.best_trials), said under the
    strong recipe."""
    if args.recipe == "strong":
        return verdict.write(args, rows, wide_records, results_dir, name, answer, searched), [
            f"{name}.md", f"{name}.csv", f"{name}.png", f"{name}-budgets.png"]
    text = answer + "\n" + table(args, rows, wide_records)
    (results_dir / f"{name}.md").write_text(text)
    write_csv(rows, results_dir / f"{name}.csv")
    plot(args, rows, results_dir / f"{name}.png")
    return text, [f"{name}.md", f"{name}.csv", f"{name}.png"]


def fmt(values, digits=2):
    return tables.fmt(mean_std(values), digits)


def verdict_rows(args, results, wide_records):
    """Per budget and method: the numbers of its seed runs."""
    wide_minutes = sum(r["wall_seconds"] for r in wide_records if r["seed"] > 0) / 60 / max(args.seeds, 1)
    rows = []
    order = [m.name for m in sorted(METHODS, key=lambda m: m.plain)]  # dendritic methods first, as they train
    for budget, by_method in results.items():
        for name, (records, undecided) in sorted(by_method.items(), key=lambda item: order.index(item[0])):
            if not records:
                continue
            method = BY_NAME[name]
            records = timed_once(records)
            timed = [r for r in records if r["inference_ms"]]
            rows.append({
                "budget": budget, "method": name, "n": len(records),
                "test_acc": [r["test_acc"] for r in records], "params": [r["params"] for r in records],
                "epochs": [r["epochs"] for r in records], "minutes": [r["wall_seconds"] / 60 for r in records],
                "ms1": [r["inference_ms"]["1"] for r in timed], "ms256": [r["inference_ms"]["256"] for r in timed],
                "wide_minutes": wide_minutes if method.wide else 0.0,
                "hp": records[0]["hp"], "undecided": undecided, "records": records})
    return rows


def timed_once(records):
    """One method's seed records at one budget, a seed that timed no inference (its architecture
    is a timed seed's: the same width) given that seed's milliseconds and `timed_by` its seed."""
    timed = {r["params"]: r for r in records if r["inference_ms"]}

    def given(record):
        source = timed.get(record["params"])
        if record["inference_ms"] or source is None:
            return record
        ms = {key: record[key] | {k: source[key][k] for k in ("ort_ms", "torchscript_ms") if k in source[key]}
              for key in ("onnx", "int8") if record.get(key) and source.get(key)}
        return record | ms | {"inference_ms": source["inference_ms"], "timed_by": source["seed"]}
    return [given(r) for r in records]


def table(args, rows, wide_records):
    lines = [f"## Which method shrinks a CNN best? {args.dataset}, {args.model}", "",
             f"Each method tuned with {args.trials} search trials on validation (seed 0): Optuna's TPE, or where "
             "the space is a finite set (the library recipes' methods) as many distinct configurations in random "
             "order, all of them if fewer; a restart control takes its plain recipe's choice, matched the "
             f"dendritic search's. Then seeds 1-{args.seeds} of its choice, tested; mean ± std over those seeds. "
             "Parameters: the library's count for dendritic models, the dense count otherwise. Inference: the "
             "exported model.ts on the CPU, median ms per forward pass"
             + (" (timed once per architecture: the seeds of one width share the first seed's)"
                if any("timed_by" in r for row in rows for r in row["records"]) else "")
             + ". Training: minutes per run (pruned and distilled: plus the wide model's, per seed).", ""]
    if wide_records:
        wide = [r for r in wide_records if r["seed"] > 0]
        if wide:
            lines += [f"The wide model (plain, width {args.wide:g}): {fmt([r['params'] for r in wide], 0)} parameters, "
                      f"test {fmt([r['test_acc'] for r in wide])} %, {fmt([r['wall_seconds'] / 60 for r in wide])} "
                      "training minutes.", ""]
    lines += ["| budget | method | test acc % | params | inference ms, batch 1 | batch 256 | training min | epochs "
              "| seeds | configuration |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: r["budget"]):
        minutes = fmt(row["minutes"]) + (f" + {row['wide_minutes']:.2f}" if row["wide_minutes"] else "")
        ms = (fmt(row["ms1"], 3), fmt(row["ms256"], 2)) if row["ms1"] else ("", "")
        lines.append(f"| {row['budget']:,} | {row['method']} | {fmt(row['test_acc'])} | {fmt(row['params'], 0)} "
                     f"| {ms[0]} | {ms[1]} | {minutes} | {fmt(row['epochs'], 0)} | {row['n']} "
                     f"| {spaces.describe(row['hp'])}{undecided_note(row['undecided'])} |")
    budgets = sorted({r["budget"] for r in rows})
    cell = {(r["method"], r["budget"]): r for r in rows}
    lines += ["", "Test accuracy % by budget (mean ± std over seeds):", "",
              "| method | " + " | ".join(f"{b:,}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for name in DEFAULT_METHODS + DENDRITIC_STUDENT:
        if any((name, b) in cell for b in budgets):
            lines.append(f"| {name} | " + " | ".join(fmt(cell[(name, b)]["test_acc"]) if (name, b) in cell else ""
                                                    for b in budgets) + " |")
    lines += [""] + deployment_table([((f"{r['budget']:,}", r["method"]), r["records"])
                                      for r in sorted(rows, key=lambda r: r["budget"])], "budget | method")
    lines += ["Best mean test accuracy per budget, and every method within one standard deviation of it:", ""]
    for budget in sorted({r["budget"] for r in rows}):
        at = [r for r in rows if r["budget"] == budget]
        complete = [r for r in at if r["n"] == args.seeds]
        if len(complete) < len(args.methods):  # a sweep still running: no verdict from part of it
            lines.append(f"- {budget:,}: not all in yet ({len(complete)} of {len(args.methods)} methods with "
                         "every seed); no verdict")
            continue
        best = max(at, key=lambda r: statistics.fmean(r["test_acc"]))
        spread = statistics.stdev(best["test_acc"]) if len(best["test_acc"]) > 1 else 0.0
        near = [r["method"] for r in at if r is not best
                and statistics.fmean(r["test_acc"]) >= statistics.fmean(best["test_acc"]) - spread]
        lines.append(f"- {budget:,}: **{best['method']}** {fmt(best['test_acc'])} %"
                     + (f"; within its spread: {', '.join(near)}" if near else "; no other method within its spread"))
    return "\n".join(lines) + "\n"


def undecided_note(accuracy):
    if accuracy is None:
        return ""
    return f" (search undecided: every trial {accuracy:.2f} % on validation, so the first drawn was kept)"


def plot(args, rows, path):
    """Test accuracy against parameters, every method with error bars: all budgets on the
    left, the budgets where every method is above chance on the right, zoomed in."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    colors = [*plt.rcParams["axes.prop_cycle"].by_key()["color"], "black", "grey", "brown"]  # one per method
    budgets = sorted({r["budget"] for r in rows})
    zoomed = [b for b in budgets if b > budgets[0]] or budgets
    for ax, shown in zip(axes, (budgets, zoomed)):
        for i, name in enumerate(DEFAULT_METHODS + DENDRITIC_STUDENT):  # each method's colour as before they existed
            pts = sorted((statistics.fmean(r["params"]), statistics.fmean(r["test_acc"]),
                          statistics.stdev(r["test_acc"]) if r["n"] > 1 else 0.0)
                         for r in rows if r["method"] == name and r["budget"] in shown)
            if pts:
                style = "--" if not BY_NAME[name].plain else ":" if BY_NAME[name].control else "-"
                ax.errorbar(*zip(*pts), fmt="o" + style, color=colors[i % len(colors)], capsize=3, label=name,
                            alpha=0.85)
        ax.set_xscale("log")
        # Ticks at the budgets: over a narrow range (one budget, zoomed) the log axis's own
        # minor labels run into each other.
        ax.set_xticks(shown, [f"{b:,}" for b in shown])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("parameters (log scale; ticks at the budgets)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test accuracy % (mean ± std over seeds)")
    axes[0].set_title("every budget")
    axes[1].set_title(f"budgets from {zoomed[0]:,} (zoomed)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Shrinking a CNN on {args.dataset} ({args.model}): each method at each budget "
                 "(dashed: dendrites; dotted: controls)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["budget", "method", "seed_runs", "test_acc_mean", "test_acc_std", "params_mean",
                         "inference_ms_batch1", "inference_ms_batch256", "training_minutes", "wide_minutes",
                         "onnx_bytes", "ort_ms_batch1", "int8_test_acc", "int8_bytes"])
        for r in rows:
            onnx = [x["onnx"] for x in r["records"] if x["onnx"]]  # blank: recorded before ONNX export
            int8 = [x["int8"] for x in r["records"] if x["int8"]]
            writer.writerow([r["budget"], r["method"], r["n"], round(statistics.fmean(r["test_acc"]), 3),
                             round(statistics.stdev(r["test_acc"]), 3) if r["n"] > 1 else 0.0,
                             round(statistics.fmean(r["params"])),
                             round(statistics.median(r["ms1"]), 4) if r["ms1"] else "",
                             round(statistics.median(r["ms256"]), 3) if r["ms256"] else "",
                             round(statistics.fmean(r["minutes"]), 3), round(r["wide_minutes"], 3),
                             round(statistics.fmean(o["bytes"] for o in onnx)) if onnx else "",
                             round(statistics.median(o["ort_ms"]["1"] for o in onnx), 4) if onnx else "",
                             round(statistics.fmean(q["test_acc"] for q in int8), 3) if int8 else "",
                             round(statistics.fmean(q["bytes"] for q in int8)) if int8 else ""])


