"""The final models a study counts, kept with its records, and the pass that times them.

A run folder stays on the machine that trained it. The models a report counts are kept in the
results, next to their records: a sweep continued on another machine finds the wide model there,
and the timing pass (here, or in a fresh clone on another CPU) finds every final model.
"""

import json
import os
import shutil
from importlib.metadata import version
from pathlib import Path

from neuroshrink import export, machine
from neuroshrink.errors import UsageError

KINDS = (("fp32", "onnx", "model.onnx"), ("int8", "int8", "model.int8.onnx"))  # (row, record key, file)
SEED_FILES = tuple(file for _, _, file in KINDS)  # what the report counts and times of a seed run
WIDE_FILES = ("results.json", "model.ts")  # what pruning and distillation start from


# ---------------------------------------------------------------- the final models, kept with the records

def kept(record, folder):
    """Where a run's files are kept: <folder>/<its study>/<its seed's folder>."""
    run = Path(record["run"])
    return Path(folder) / run.parent.name / run.name


def keep(records, folder, files):
    """Copy each run's `files` from its run folder into `folder`, once (never half a file)."""
    for record in records:
        run, to = Path(record["run"]), kept(record, folder)
        for file in files:
            if (run / file).exists() and not (to / file).exists():
                to.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run / file, to / f"{file}.tmp")
                os.replace(to / f"{file}.tmp", to / file)


def run_folder(record, folder, files):
    """The folder that holds the run's `files`: its own, else its kept copy."""
    for place in (Path(record["run"]), kept(record, folder)):
        if all((place / file).exists() for file in files):
            return place
    raise UsageError(f"{record['run']}: its {', '.join(files)} are neither there nor in {kept(record, folder)}; "
                     "train it again on this machine, or continue where its run folder is")


# ---------------------------------------------------------------- the timing pass

def time_inference(rows, splits, path, kept_in, min_seconds=0.3):
    """Time every seed run's model.onnx and model.int8.onnx (from its run folder, else its copy
    kept in `kept_in`) in ONNX Runtime on one thread at batch 1 and 256 (of the test images),
    one after another; write them to `path` (JSON) with the machine and the date. Every model is
    timed again: a speed is compared only with speeds measured in the same pass."""
    runs = {}
    for row in rows:
        for record in row["records"]:
            place = run_folder(record, kept_in, SEED_FILES)
            runs[record["run"]] = {kind: export.latency(place / file, splits.test[0], splits.normalisation, min_seconds)["ort_ms"]
                                   for kind, _, file in KINDS}
            print(f"timed {record['run']}: " + ", ".join(f"{kind} {ms['1']:.3f} / {ms['256']:.2f} ms"
                                                        for kind, ms in runs[record["run"]].items()))
    latency = {"cpu": machine.cpu_name(), "date": machine.today(), "threads": 1,
               "onnxruntime": version("onnxruntime"), "batch_sizes": [1, 256], "runs": runs}
    Path(path).write_text(json.dumps(latency, indent=1) + "\n")
    return latency


def read_latency(path):
    return json.loads(Path(path).read_text()) if Path(path).exists() else None
