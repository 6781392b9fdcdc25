"""Measurements of a checkout labelled before and after a change: its revision, the labels kept
in a JSON file with the report beside it, and the example images they run on."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from neuroshrink import machine
from neuroshrink.flags import Parser

ROOT = Path(__file__).resolve().parents[2]


def revision(checkout):
    """The checkout's commit, with "+changes" where its code differs from it (records under
    results/, which a sweep may be writing meanwhile, and the docs and tests being edited
    meanwhile are not the code measured)."""
    git = ["git", "-C", str(checkout)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results", ":!docs",
                              ":!tests", ":!*.md"], capture_output=True, text=True).stdout.strip()
    return (commit or "unknown") + ("+changes" if changed else "")


def parser(name, description, what_runs, images):
    """The command line of a before-and-after measurement: --label, --checkout (whose
    `what_runs` runs), --images (the example folder named `images` in the temporary folder)."""
    p = Parser(prog=f"python -m experiments.{name}", description=description)
    p.add_argument("--label", required=True, help="the name these numbers are kept under (before, after, ...)")
    p.add_argument("--checkout", type=Path, default=ROOT, help=f"the checkout whose {what_runs} runs (default: this one)")
    p.add_argument("--images", type=Path, default=Path(tempfile.gettempdir()) / images,
                   help="the image folder (written by example_folder where it is missing)")
    return p


def measured_on(checkout):
    """What a labelled measurement names besides its numbers: the checkout's revision as it
    runs, the CPU and the date."""
    return {"revision": revision(checkout), "cpu": machine.cpu_name(), "date": machine.today()}


def read_labels(path):
    """{label: measurement} kept so far in the JSON file at `path`."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_labels(path, kept, report):
    """The measurements to `path`, and report(kept) beside it as .md; returns the report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kept, indent=1) + "\n")
    text = report(kept)
    path.with_suffix(".md").write_text(text)
    return text


def footer(kept):
    """A report's last lines: where and when each label was measured."""
    return [""] + [f"- {k}: revision {v['revision']}, {v['cpu']}, {v['date']}" for k, v in kept.items()]


def example_images(folder, flags):
    """The image folder example_folder writes with `flags`, written where it is missing."""
    if not folder.exists():
        subprocess.run([sys.executable, "-m", "experiments.example_folder", *flags, "--out", str(folder)],
                       cwd=ROOT, check=True)
