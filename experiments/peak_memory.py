"""Peak memory (RSS) of a run, for a checkout of this project: where the data's bytes go.

Two runs of train_phase2.py, each in a process of its own whose peak resident memory the
kernel reports (getrusage of the children):

    fashion-mnist   the compact CNN, plain, 2 epochs, fp32, 1 thread (the test accuracy shows
                    whether two checkouts train bit for bit alike)
    colour-128      20,000 colour 128 x 128 images (Fashion-MNIST written as a folder by
                    example_folder), read for the first time, the net at width 1/8, 1 epoch

    python -m experiments.peak_memory --label after
    python -m experiments.peak_memory --label before --checkout ../an-older-checkout

--checkout runs another checkout's train_phase2.py (with this interpreter): the same command
measures a revision before a change and after it. Each label's numbers go into
results/memory/peak-memory.json with the CPU, the date and the checkout's revision, and
results/memory/peak-memory.md shows them side by side. Memory only: nothing here is timed.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from experiments.common import before_after

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "memory"
COLOUR_FOLDER = ["--dataset", "fashion-mnist", "--classes", *map(str, range(10)), "--per-class", "2000",
                 "--size", "128", "--colour"]
RUNS = {"fashion-mnist": ["--dataset", "fashion-mnist", "--model", "compact", "--no-dendrites", "--epochs", "2",
                          "--precision", "fp32"],
        "colour-128": ["--model", "net", "--width", "0.125", "--no-dendrites", "--epochs", "1", "--precision", "fp32"]}


def get_args_parser():
    p = before_after.parser("peak_memory", __doc__.split("\n\n")[0], "train_phase2.py", "neuroshrink-colour128")
    p.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    return p


# A process between this one and the run, whose children are the run alone: the kernel's peak of
# its children is the run's own (this process's would be the largest of all its runs so far).
PEAK_OF_CHILD = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
                 "print(f'peak_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
                 "sys.exit(done.returncode)")


def measured(checkout, argv, work):
    """(peak RSS MB, the run's data MB as its start line says, its record's final test accuracy)."""
    run = [sys.executable, str(checkout / "train_phase2.py"), *argv, "--out", str(work / "run")]
    done = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *run], cwd=checkout, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    *said, last = done.stderr.strip().splitlines()
    if done.returncode != 0:
        sys.exit(f"error: train_phase2.py {' '.join(argv)} failed: {(said or ['?'])[-1]}")
    peak = int(last.removeprefix("peak_kb="))
    start = next(line for line in done.stdout.splitlines() if line.startswith("data: "))
    data_mb = float(start.split(" MB")[0].rsplit(" ", 1)[1].replace(",", ""))
    record = json.loads((work / "run" / "results.json").read_text())
    return {"peak_rss_mb": round(peak / 1024), "data_mb": data_mb, "test_acc": record["final"]["test_acc"]}


def report(kept):
    labels = list(kept)
    lines = ["# Peak memory of a run", "", "`python -m experiments.peak_memory` (docs/own-data.md, Memory); one "
             "process a run, peak resident memory as the kernel counts it.", "",
             "| run | " + " | ".join(f"{k} peak MB | {k} data MB | {k} test %" for k in labels) + " |",
             "|---|" + "---|---|---|" * len(labels)]
    for name in RUNS:
        cells = [kept[k]["runs"].get(name) for k in labels]
        lines.append(f"| {name} | " + " | ".join(f"{c['peak_rss_mb']:,} | {c['data_mb']:,.1f} | {c['test_acc']:.3f}"
                                                  if c else "- | - | -" for c in cells) + " |")
    return "\n".join(lines + before_after.footer(kept)) + "\n"


def main(args):
    path = RESULTS / "peak-memory.json"
    kept = before_after.read_labels(path)
    if "colour-128" in args.runs:
        before_after.example_images(args.images, COLOUR_FOLDER)
    runs, measured_on = {}, before_after.measured_on(args.checkout)
    for name in args.runs:
        with tempfile.TemporaryDirectory() as work:  # a fresh data folder: the images are read, not cached
            argv = RUNS[name] + (["--dataset", f"folder:{args.images}", "--data-dir", work]
                                 if name == "colour-128" else [])
            runs[name] = measured(args.checkout.resolve(), argv, Path(work))
        print(f"{name}: {runs[name]}")
    kept[args.label] = measured_on | {"runs": kept.get(args.label, {}).get("runs", {}) | runs}
    print(before_after.write_labels(path, kept, report))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
