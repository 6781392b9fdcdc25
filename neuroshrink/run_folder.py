"""A run's folder: everything a run keeps on disk, and stopping without losing any of it.

<out>/results.json is the run's record: its settings, every epoch, every restructure and
the final metrics. <out>/checkpoint/epochNNNN/ holds the last completed epoch for
--resume. Nothing here is ever half-written: a new snapshot folder is written first,
then results.json is switched to it (temporary name, then rename), then older snapshots
are deleted. SIGINT and SIGTERM stop the run at once, except inside `safe_point()`,
where they wait until the epoch is saved.
"""

import json
import os
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import UsageError
from .records import SCHEMA

RUN_FORMAT = 1  # layout of a run folder; --resume refuses any other


class Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def write_json(path, obj):
    """Write by temporary name and rename, so a killed run never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def read_run(out):
    """results.json of a run folder, or None if there is none; UsageError if unreadable."""
    path = Path(out) / "results.json"
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
    except ValueError:
        run = None
    if not (isinstance(run, dict) and {"status", "format", "settings"} <= run.keys()):
        raise UsageError(f"{path} is damaged; delete {out} or choose another --out")
    return run


class RunFolder:
    """The folder `--out` of one run, and its record `result` (what results.json holds)."""

    def __init__(self, out):
        self.given = out                # as the user wrote it, for messages
        self.path = Path(out).resolve()
        self.name = self.path.name      # the library's save name
        self.result = None
        self.resuming = False
        self._started = time.perf_counter()
        self._elapsed_before = 0.0      # a resumed run counts its earlier time
        self._holding, self._pending = False, None

    # ------------------------------------------------------------ starting

    def reopen(self):
        """--resume: the interrupted run's record, checked; `open()` then continues it."""
        run = read_run(self.path)
        if run is None:
            raise UsageError(f"--resume: {self.path} holds no run to resume")
        if run["format"] != RUN_FORMAT:
            raise UsageError(f"--resume: {self.path} was written by an incompatible version "
                             f"(run format {run['format']}, this script reads {RUN_FORMAT})")
        if run["status"] == "complete":
            raise UsageError(f"--resume: the run in {self.path} is already complete")
        if "checkpoint" in run and not (self.path / run["checkpoint"] / "state.pt").is_file():
            raise UsageError(f"--resume: the run's checkpoint {self.path / run['checkpoint']} is missing")
        self.result, self.resuming = run, "checkpoint" in run  # stopped inside its first epoch: start again
        return run

    def open(self, settings, **more):
        """Make the folder ready: reopen the run being resumed, or claim it for a new run
        (recording its `settings` and `more`) without losing anything the user still needs."""
        if self.resuming:
            self._elapsed_before = self.result.get("elapsed_seconds", 0.0)
            kept = self.result.get("checkpoint_epoch", self.epochs_done)  # later epochs are trained again
            self.result["history"] = self.result["history"][:kept]
            self.result["restructures"] = [r for r in self.result["restructures"] if r["epoch"] <= kept]
            self.result.update(more)
        else:
            if self.result is not None:  # a resume of a run with no completed epoch
                shutil.rmtree(self.path)
            self._claim()
            self.result = {"format": RUN_FORMAT, "schema": SCHEMA, "out": str(self.path), "settings": settings, **more,
                           "phase1": {}, "history": [], "restructures": [], "final": {}}
        self.result["status"] = "running"

    def _claim(self):
        out = self.path
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file; give a folder")
        existing = next(p for p in (out, *out.parents) if p.exists())
        if not (existing.is_dir() and os.access(existing, os.W_OK)):
            raise UsageError(f"--out {out}: {existing} is not a writable folder")
        if out.is_dir() and any(out.iterdir()):
            run = read_run(out)
            if run is None:
                raise UsageError(f"--out {out} holds files that are not a run of this script; "
                                 "choose a new or empty folder")
            if run["status"] != "complete":
                raise UsageError(f"--out {out} holds an unfinished run; continue it with --resume, "
                                 "or delete the folder to start again")
            print(f"replacing the previous run in {out}/")
            for f in out.iterdir():  # the library would silently reload a settings file left here
                f.unlink() if f.is_file() else shutil.rmtree(f)
        out.mkdir(parents=True, exist_ok=True)

    @property
    def epochs_done(self):
        return len(self.result["history"])

    def load_snapshot(self, library_files, device):
        """The saved state of the last completed epoch; the library's own files are put
        back where it reads them."""
        snapshot = self.path / self.result["checkpoint"]
        for name in library_files:
            shutil.copyfile(snapshot / name, self.path / name)
        return torch.load(snapshot / "state.pt", map_location=device, weights_only=False)

    # ------------------------------------------------------------ each epoch

    def save_epoch(self, row, restructure, state, library_files):
        """Record an epoch and snapshot the run: a new folder, then results.json switched to
        it, then older ones deleted. A kill at any moment leaves a snapshot to resume from.

        An epoch in which the tracker restructured the model gets no snapshot: the library
        wrote its latest.pt before restructuring, so its files and the rebuilt optimizer
        would not fit together. The snapshot before it stays the resume point, and a resume
        trains the restructure epoch again, to the same result."""
        self.result["history"].append(row)
        if restructure is not None:
            self.result["restructures"].append(restructure)
        self.result["elapsed_seconds"] = self.elapsed()
        if restructure is not None:
            write_json(self.path / "results.json", self.result)
            return
        snapshot = self.path / "checkpoint" / f"epoch{self.epochs_done:04d}"
        snapshot.mkdir(parents=True, exist_ok=True)
        torch.save(state, snapshot / "state.pt")
        for name in library_files:
            shutil.copyfile(self.path / name, snapshot / name)
        self.result["checkpoint"] = str(snapshot.relative_to(self.path))
        self.result["checkpoint_epoch"] = self.epochs_done
        write_json(self.path / "results.json", self.result)
        for old in (self.path / "checkpoint").iterdir():
            if old != snapshot:
                shutil.rmtree(old)

    def elapsed(self):
        return self._elapsed_before + time.perf_counter() - self._started

    # ------------------------------------------------------------ stopping

    @contextmanager
    def stopping_safely(self, before_stop=lambda: None):
        """SIGINT / SIGTERM inside this block stop the run: `before_stop()` runs, the record
        is saved as interrupted, the way to continue is printed, and Interrupted is raised."""
        saved = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        except Interrupted as stop:
            before_stop()
            self.result["status"] = "interrupted"
            write_json(self.path / "results.json", self.result)
            print(f"\n{stop}: stopped after epoch {self.epochs_done}, saved in {self.path}/. "
                  f"Continue with: python train_phase2.py --resume --out {self.given}", flush=True)
            raise
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)

    def _on_signal(self, signum, frame):
        if self._holding:
            self._pending = signum
        else:
            raise Interrupted(signum)

    @contextmanager
    def safe_point(self):
        """A signal that arrives inside this block waits until the block is done."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending:
            raise Interrupted(self._pending)

    # ------------------------------------------------------------ finishing

    def finish(self, final):
        """Record the final metrics; the run is complete."""
        self.result.update(status="complete", final=final)
        write_json(self.path / "results.json", self.result)
