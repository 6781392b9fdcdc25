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

from neuroshrink import machine
from neuroshrink.flags import Parser

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "memory"
COLOUR_FOLDER = ["--dataset", "fashion-mnist", "--classes", *map(str, range(10)), "--per-class", "2000",
                 "--size", "128", "--colour"]
RUNS = {"fashion-mnist": ["--dataset", "fashion-mnist", "--model", "compact", "--no-dendrites", "--epochs", "2",
                          "--precision", "fp32"],
        "colour-128": ["--model", "net", "--width", "0.125", "--no-dendrites", "--epochs", "1", "--precision", "fp32"]}


def get_args_parser():
    p = Parser(prog="python -m experiments.peak_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--label", required=True, help="the name these numbers are kept under (before, after, ...)")
    p.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose train_phase2.py runs (default: this one)")
    p.add_argument("--images", type=Path, default=Path(tempfile.gettempdir()) / "neuroshrink-colour128",
                   help="the colour folder (written by example_folder where it is missing)")
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


def revision(checkout):
    """The checkout's commit, with "+changes" where its code differs from it (records under
    results/, which a sweep may be writing meanwhile, are not code)."""
    git = ["git", "-C", str(checkout)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                             capture_output=True, text=True).stdout.strip()
    return (commit or "unknown") + ("+changes" if changed else "")


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
    lines += [""] + [f"- {k}: revision {v['revision']}, {v['cpu']}, {v['date']}" for k, v in kept.items()]
    return "\n".join(lines) + "\n"


def main(args):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "peak-memory.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    if "colour-128" in args.runs and not args.images.exists():
        subprocess.run([sys.executable, "-m", "experiments.example_folder", *COLOUR_FOLDER, "--out", str(args.images)],
                       cwd=ROOT, check=True)
    runs, measured_at = {}, revision(args.checkout)  # the revision as it runs
    for name in args.runs:
        with tempfile.TemporaryDirectory() as work:  # a fresh data folder: the images are read, not cached
            argv = RUNS[name] + (["--dataset", f"folder:{args.images}", "--data-dir", work]
                                 if name == "colour-128" else [])
            runs[name] = measured(args.checkout.resolve(), argv, Path(work))
        print(f"{name}: {runs[name]}")
    kept[args.label] = {"revision": measured_at, "cpu": machine.cpu_name(), "date": machine.today(),
                        "runs": kept.get(args.label, {}).get("runs", {}) | runs}
    path.write_text(json.dumps(kept, indent=1) + "\n")
    (RESULTS / "peak-memory.md").write_text(report(kept))
    print(report(kept))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
