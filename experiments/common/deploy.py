"""A study's answer: in words, and as files to ship (per budget its winner; with --fit the model
that fits a device).

The winner of a budget is chosen by validation, never by test: the method with the best mean
validation accuracy over its seeds, then that method's seed with the best validation accuracy.
Its model.onnx and model.int8.onnx go to <results>/<dataset>/deploy/<study>/<budget>/ with a
README.md: how it was made, its test accuracy (reported, not used to choose), bytes,
milliseconds and the predict command. --fit 30kB and/or 0.05ms names, among every seed run's
fp32 and int8 file, the most accurate on validation whose file and one-thread latency at batch 1
fit, and writes it to deploy/<study>/fit-<limits>/ the same way.

Every file shipped is self-contained (export.self_contained): raw pixels in, the training
normalisation and the class names inside. A model exported before that is made so on the way
out (no retraining); the bytes are those of the files shipped.

answer() says it in a line per budget: whether the dendrites beat their control (dendritic
against matched, beyond the seeds' spread or not), the method to use, and the folder to ship.
"""

import argparse
import re
import shutil
import statistics
import tempfile
from pathlib import Path

from experiments.common import kept_runs, spaces
from experiments.common.tables import fmt, mean_std
from neuroshrink import export, machine

UNITS = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000 ** 2}


def limit(text):
    """A --fit limit: ("bytes", n) for 30kB, 120000B, 1.5MB; ("ms", x) for 0.05ms."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|ms)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size (e.g. 30kB, 120000B, 1.5MB) or a latency (e.g. 0.05ms)")
    value, unit = float(match[1]), match[2]
    return ("ms", value) if unit == "ms" else ("bytes", value * UNITS[unit])


def describe(limits):
    return " and ".join(f"{v:g} ms at batch 1" if k == "ms" else f"{v:,.0f} bytes" for k, v in limits)


def candidates(rows, kept):
    """(row, record, kind, folder holding its files) for every seed run's fp32 and int8 file
    there is on this machine."""
    for row in rows:
        for record in row["records"]:
            place = files_of(record, kept)
            for kind, key, file in kept_runs.KINDS:
                if place and record.get(key) and (place / file).exists():
                    yield row, record, kind, place


def files_of(record, kept):
    """The folder with the run's ONNX files: its run folder, else the copy kept with the records."""
    for place in (Path(record["run"]), kept and kept_runs.kept(record, kept)):
        if place and (place / "model.onnx").exists():
            return place
    return None


def ms_of(record, kind, latency, path, splits):
    """One-thread ms at batch 1 and where it comes from: the study's timing pass where it ran, else
    the run's own timing, else (a study whose runs time nothing: --recipe strong) the file at
    `path` timed now."""
    timed = (latency or {}).get("runs", {}).get(record["run"])
    if timed:
        return timed[kind]["1"], f"the study's timing pass ({latency['cpu']}, {latency['date']})"
    own = record["onnx" if kind == "fp32" else "int8"].get("ort_ms")
    if own:
        return own["1"], "measured by the run as it finished"
    ms = export.latency(path, splits.test[0], splits.normalisation, batch_sizes=(1,))["ort_ms"]["1"]
    return ms, f"measured as it was shipped ({machine.cpu_name()}, {machine.today()})"


def ship(row, record, kind, place, splits, target, study):
    """`target` (a file path): the run's `kind` file, self-contained; returns its path."""
    key, file = {k: (key, f) for k, key, f in kept_runs.KINDS}[kind]
    about = {"dataset": record["dataset"], "study": study, **row.get("about", {"budget": row["budget"]}),
             "method": row["method"], "seed": record["seed"], "params": record["params"],
             "test_acc": record[key]["test_acc"]}
    return export.self_contained(place / file, target, splits.normalisation, export.describe(splits, **about))


def readme(title, why, files, splits, study, latency):
    """The README of a shipped model: `files` is [(row, record, kind, path)]."""
    row, record = files[0][:2]
    lines = [f"# {title}", "", why, "",
             f"Made by: {study}, method **{row['method']}**, seed {record['seed']}, {record['params']:,} parameters, "
             f"configuration {spaces.describe(row['hp'])}; trained on {record['settings'].get('cpu', 'an unrecorded CPU')}"
             f", {record['settings'].get('date', '')}.", "",
             "| file | validation acc % | test acc % (reported, not used to choose) | bytes | ms, batch 1 (ONNX Runtime, "
             "1 thread) |", "|---|---|---|---|---|"]
    for _, rec, kind, path in files:
        key = "onnx" if kind == "fp32" else "int8"
        ms, source = ms_of(rec, kind, latency, path, splits)
        val = rec["val_acc"] if kind == "fp32" else validation(path, splits)
        lines.append(f"| {path.name} | {val:.2f} | {rec[key]['test_acc']:.2f} | {path.stat().st_size:,} | {ms:.3f} |")
    lines += ["", f"Milliseconds: {source}.",
              "", f"Input: raw pixels, uint8 (N, {splits.in_channels}, {splits.image_size}, {splits.image_size}); "
              f"the model normalises them itself. Classes: {', '.join(splits.class_names())}.", "",
              "Classify image files (needs onnxruntime, Pillow and NumPy only):", "", "```",
              f"python -m neuroshrink.predict {files[0][3].name} IMAGE_OR_FOLDER ...", "```", "",
              "More in docs/deploy.md."]
    return "\n".join(lines) + "\n"


def validation(path, splits):
    """Validation accuracy of a shipped file in ONNX Runtime (an int8 file's is not recorded)."""
    return export.ort_accuracy(export.ort_session(path), *splits.val, splits.normalisation)


def chosen(rows, seeds):
    """{budget: (row, record)} for each budget whose every method has every seed: the method with
    the best mean validation accuracy over its seeds, then its seed with the best validation."""
    picks = {}
    for budget in sorted({r["budget"] for r in rows}):
        at = [r for r in rows if r["budget"] == budget]
        if any(r["n"] < seeds for r in at):
            continue
        row = max(at, key=lambda r: statistics.fmean(x["val_acc"] for x in r["records"]))
        picks[budget] = row, max(row["records"], key=lambda x: x["val_acc"])
    return picks


def winners(rows, splits, kept, latency, deploy, study, seeds, named=lambda budget: f"{budget:,} parameters",
            folder_of=str):
    """Each budget's winner by validation, shipped to deploy/<budget>/ where its files are on this
    machine: {budget: (row, record, folder or None)}. A study grouped by something else (the
    search: by width) names its groups with `named` and their folders with `folder_of`."""
    shipped = {}
    for budget, (row, record) in chosen(rows, seeds).items():
        place = files_of(record, kept)
        if place is None:
            print(f"deploy {named(budget)}: the winner's files ({record['run']}) are not on this machine; not shipped")
            shipped[budget] = row, record, None
            continue
        folder = deploy / folder_of(budget)
        folder.mkdir(parents=True, exist_ok=True)
        files = [(row, record, kind, ship(row, record, kind, place, splits, folder / file, study))
                 for kind, key, file in kept_runs.KINDS if record.get(key) and (place / file).exists()]
        why = (f"The winner at {named(budget)}: the method with the best mean validation accuracy over its "
               f"{seeds} seeds ({row['method']}, {statistics.fmean(x['val_acc'] for x in row['records']):.2f} %), "
               "then its seed with the best validation accuracy. Chosen by validation, never by test.")
        (folder / "README.md").write_text(readme(f"Ship this: {named(budget)}", why, files, splits, study, latency))
        shipped[budget] = row, record, folder
    return shipped


def answer(rows, shipped, title, base):
    """The study's answer in words, a line per budget: whether dendrites helped (dendritic against
    matched, test accuracy: helped or not only where mean ± std of the two do not overlap), which
    method to use (by validation) and the file to ship (its folder relative to `base`)."""
    lines = [f"## The answer: {title}", ""]
    for budget in sorted({r["budget"] for r in rows}):
        at = {r["method"]: r for r in rows if r["budget"] == budget}
        if budget not in shipped:
            lines.append(f"- {budget:,} parameters: not every method has every seed yet; no answer")
            continue
        parts = []
        for dendritic, control, how in (("dendritic", "matched", ""),
                                        ("dendritic-distilled", "matched-distilled", " with distillation")):
            if dendritic in at and control in at:
                (d, ds), (m, ms) = mean_std(at[dendritic]["test_acc"]), mean_std(at[control]["test_acc"])
                said = (f"dendrites{how} helped" if d - ds > m + ms else f"dendrites{how} did not help"
                        if m - ms > d + ds else f"no difference the seeds can resolve{how}")
                parts.append(f"{said} ({dendritic} {fmt((d, ds))} % against {fmt((m, ms))} % for the same CNN "
                             "trained the same way without them, test accuracy over the seeds)")
        row, record, folder = shipped[budget]
        use = f"use **{row['method']}** (the best on validation)"
        if folder is not None:  # named from the report's folder, the same wherever it is regenerated
            use += (f", seed {record['seed']}: ship {folder.relative_to(base)}/ ({record['onnx']['test_acc']:.2f} % "
                    "test; its README.md says what it is)")
        parts.append(use)
        lines.append(f"- {budget:,} parameters: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def fit(rows, splits, kept, latency, deploy, study, limits):
    """The most accurate file on validation, over every seed run's fp32 and int8 file, whose
    bytes and batch-1 ms are within `limits` [("bytes", n), ("ms", x)]; shipped, and returned
    as (its folder, its README) or None when nothing fits."""
    name = "fit-" + "-".join(f"{v:g}ms" if k == "ms" else f"{v / 1000:g}kB" for k, v in limits)
    fitting = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (row, record, kind, place) in enumerate(candidates(rows, kept)):
            path = ship(row, record, kind, place, splits, Path(tmp) / f"{i}.onnx", study)
            fits = all(path.stat().st_size <= v for k, v in limits if k == "bytes") and all(
                ms_of(record, kind, latency, path, splits)[0] <= v for k, v in limits if k == "ms")  # timed if asked
            if fits:
                val = record["val_acc"] if kind == "fp32" else validation(path, splits)
                fitting.append((val, row, record, kind, path))
        if not fitting:
            return None
        val, row, record, kind, path = max(fitting, key=lambda f: f[0])
        folder = deploy / name
        folder.mkdir(parents=True, exist_ok=True)
        file = {k: f for k, _, f in kept_runs.KINDS}[kind]
        for old in folder.glob("*.onnx"):
            old.unlink()
        shutil.copyfile(path, folder / file)
    why = (f"The most accurate model on validation ({val:.2f} %) among the {len(fitting)} files of this study "
           f"(of every seed run's fp32 and int8 model) that are within {describe(limits)}. Chosen by validation, "
           "never by test.")
    text = readme(f"Fits {describe(limits)}", why, [(row, record, kind, folder / file)], splits, study, latency)
    (folder / "README.md").write_text(text)
    return folder, text
