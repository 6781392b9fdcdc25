"""Where a study's time goes, for a checkout of this project: the own-data benchmark.

The study a user of their own model and images runs (docs/own-data.md): 4,000 Fashion-MNIST
images written as a folder (example_folder), the LeNet-style factory of that page, and the plan
--minutes 15 chose for it on 2026-12-05 (4 search trials a method and 3 seeds on all 2,400
training images; results/own-data-example/folder-fashion10/four-trials/), given explicitly so
that every checkout trains the same plan.
It runs in a process of its own, on fresh data, results and runs folders:

    python -m experiments.study_time --label after
    python -m experiments.study_time --label before --checkout ../an-older-checkout

--checkout runs another checkout's experiments.shrink (with this interpreter): the same command
times a revision before a change and after it. Each label keeps the study's wall time, its
runs' seconds summed by part (every run's record: final.timing_seconds) and training's share of
the wall time, with the CPU, the date and the checkout's revision, in
results/speed/study-time.json; results/speed/study-time.md shows the labels side by side.
Nothing else may run meanwhile.

--wide-run measures a run whose time is already training instead: the Fashion-MNIST verdict's wide
model (compact at width 1, 303,338 parameters, the strong recipe, all 54,000 training images), one
seed for WIDE_EPOCHS epochs, exported and quantized as a run on its own is; in
results/speed/wide-run-time.json and .md. A change that makes a study spend its time training
must not slow this run.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.common import before_after

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "speed"
FOLDER = ["--dataset", "fashion-mnist", "--classes", *map(str, range(10)), "--per-class", "400"]
LENET = '''import torch.nn as nn


def lenet(in_channels, image_size, num_classes, width):
    c1, c2, h = max(1, round(16 * width)), max(1, round(32 * width)), max(1, round(48 * width))
    return nn.Sequential(nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(c2 * ((image_size // 2 - 4) // 2) ** 2, h), nn.ReLU(),
                         nn.Linear(h, num_classes))
'''
PLAN = ["--model", "my_models:lenet", "--trials", "4", "--seeds", "3", "--search-images", "2400"]
WIDE_EPOCHS = 5  # of the verdict's 30: enough that training is most of the run (16 s an epoch here in bf16)
WIDE_RUN = ["train_phase2.py", "--dataset", "fashion-mnist", "--model", "compact", "--width", "1", "--recipe", "strong",
            "--no-dendrites", "--seed", "1", "--epochs", str(WIDE_EPOCHS), "--quantize", "int8"]


def get_args_parser():
    p = before_after.parser("study_time", __doc__.split("\n\n")[0], "study", "neuroshrink-fashion10")
    p.add_argument("--wide-run", action="store_true",
                   help=f"instead of the study: one run of the Fashion-MNIST verdict's wide model "
                        f"({WIDE_EPOCHS} epochs)")
    return p


def parts(runs_dir):
    """(runs, {part: seconds summed over every finished run's record})."""
    records = [json.loads(p.read_text()) for p in Path(runs_dir).rglob("results.json")]
    finished = [r["final"] for r in records if r.get("status") == "complete"]
    summed = {}
    for final in finished:
        for part, seconds in final["timing_seconds"].items():
            summed[part] = summed.get(part, 0.0) + seconds
    return len(finished), {part: round(seconds, 1) for part, seconds in summed.items()}


def measured(checkout, images):
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "my_models.py").write_text(LENET)
        (work / "data").mkdir()
        done, wall = timed([sys.executable, "-m", "experiments.shrink", "--dataset", f"folder:{images}", *PLAN,
                            "--data-dir", str(work / "data"), "--results", str(work / "results"),
                            "--runs", str(work / "runs")], checkout, work)
        runs, seconds = parts(work / "runs")
    answer = done.stdout[done.stdout.rindex("## The answer"):].strip().splitlines()
    return {"wall_seconds": round(wall, 1), "runs": runs, "seconds_by_part": seconds,
            "train_share": round(seconds.get("train", 0.0) / wall, 3), "answer": answer}


def measured_wide_run(checkout):
    with tempfile.TemporaryDirectory() as work:
        done, wall = timed([sys.executable, *WIDE_RUN, "--out", str(Path(work) / "wide")], checkout, work)
        runs, seconds = parts(work)
        record = json.loads((Path(work) / "wide" / "results.json").read_text())
    return {"wall_seconds": round(wall, 1), "runs": runs, "seconds_by_part": seconds,
            "train_share": round(seconds.get("train", 0.0) / wall, 3), "epochs": record["final"]["epochs"],
            "precision": record["precision"]["chosen"], "test_acc": record["final"]["test_acc"]}


def timed(argv, checkout, work):
    """(what `argv` printed, its wall seconds), run in `checkout` with `work` on the import path;
    a failure ends the measurement with its last line."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=checkout, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(work)})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"error: the measured command failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return done, wall


STUDY = ("# Where a study's time goes", "`python -m experiments.study_time` (docs/own-data.md): the own-data study "
         "(4,000 Fashion-MNIST images as a folder, the LeNet-style factory, 4 search trials a method, 3 seeds), one "
         "process, nothing else running. Seconds of the runs by part, summed over every run's record.",
         "wall time of the study, s")
WIDE = ("# Where a wide run's time goes", "`python -m experiments.study_time --wide-run` (docs/own-data.md): the "
        "Fashion-MNIST verdict's wide model (compact, width 1, the strong recipe, 54,000 training images), seed 1, "
        f"{WIDE_EPOCHS} epochs, exported and quantized; nothing else running. Seconds by part, from the run's record.",
        "wall time of the run, s")


def report(kept, what=STUDY):
    title, description, wall = what
    labels = list(kept)
    every_part = list(dict.fromkeys(part for v in kept.values() for part in v["seconds_by_part"]))
    lines = [title, "", description, "",
             "| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels),
             f"| {wall} | " + " | ".join(f"{kept[k]['wall_seconds']:,.1f}" for k in labels) + " |",
             "| runs | " + " | ".join(str(kept[k]["runs"]) for k in labels) + " |",
             "| training's share of the wall time | " + " | ".join(f"{100 * kept[k]['train_share']:.0f} %"
                                                                for k in labels) + " |"]
    for part in every_part:
        lines.append(f"| {part}, s | " + " | ".join(f"{kept[k]['seconds_by_part'].get(part, 0.0):,.1f}"
                                                    for k in labels) + " |")
    if all("test_acc" in v for v in kept.values()):  # a run's record says what it trained to
        lines += ["| precision | " + " | ".join(kept[k]["precision"] for k in labels) + " |",
                  "| test accuracy, % | " + " | ".join(f"{kept[k]['test_acc']:.2f}" for k in labels) + " |"]
    return "\n".join(lines + before_after.footer(kept)) + "\n"


def main(args):
    path = RESULTS / ("wide-run-time.json" if args.wide_run else "study-time.json")
    kept = before_after.read_labels(path)
    measured_on = before_after.measured_on(args.checkout)
    if args.wide_run:
        kept[args.label] = measured_on | measured_wide_run(args.checkout.resolve())
    else:
        before_after.example_images(args.images, FOLDER)
        kept[args.label] = measured_on | measured(args.checkout.resolve(), args.images.resolve())
    print(before_after.write_labels(path, kept, lambda labels: report(labels, WIDE if args.wide_run else STUDY)))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
