"""neuroshrink/run_folder.py: never lose a run: claiming --out, signals, kills and --resume."""
import copy
import json
import os
import shutil
import signal
import time

import pytest

import train_phase2
from conftest import ROOT, Command, fails, files, metrics, run, stopped_then_resumed
from neuroshrink import dendrites, run_folder
from neuroshrink.config import RunConfig
from neuroshrink.records import SCHEMA


def test_output_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert "is a file; give a folder" in fails(["--quick", "--out", str(target)], capsys)
    assert "is not a writable folder" in fails(["--quick", "--out", str(target / "PAI")], capsys)
    assert target.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_output_folder_not_writable(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "is not a writable folder" in fails(["--quick", "--out", str(locked / "PAI")], capsys)
    finally:
        locked.chmod(0o700)


def test_folder_of_other_files_is_refused(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("mine")
    assert "not a run of this script" in fails(["--quick", "--out", str(tmp_path)], capsys)
    assert (tmp_path / "thesis.tex").read_text() == "mine"


def test_resume_refusals(quick_run, tmp_path, capsys):
    assert "holds no run to resume" in fails(["--resume", "--out", str(tmp_path / "empty")], capsys)
    before = files(quick_run["out"])
    assert "already complete" in fails(["--resume", "--out", str(quick_run["out"])], capsys)
    old = tmp_path / "old"
    shutil.copytree(quick_run["out"], old)
    results = json.loads((old / "results.json").read_text())
    (old / "results.json").write_text(json.dumps({**results, "format": 0, "status": "interrupted"}))
    assert "incompatible version (run format 0" in fails(["--resume", "--out", str(old)], capsys)
    (old / "results.json").write_text("{ not json")
    assert "is damaged" in fails(["--resume", "--out", str(old)], capsys)
    assert files(quick_run["out"]) == before


def start(tmp_path, *flags):
    """`python train_phase2.py --quick ...` in a process of its own (conftest.Command)."""
    return Command(tmp_path / "log.txt", [str(ROOT / "train_phase2.py"), "--quick", "--precision", "fp32",  # fp32:
                                          *flags, "--out", str(tmp_path / "PAI")], tmp_path)  # as conftest.run


def read_until_epoch(process, epoch):
    """Wait until the run has printed the line of `epoch`."""
    deadline = time.time() + 120
    while not any(line.startswith(f"epoch={epoch} ") for line in process.log.read_text().splitlines()):
        assert process.poll() is None, f"the run ended before epoch {epoch}:\n{process.log.read_text()}"
        assert time.time() < deadline, process.log.read_text()
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_safely_and_resume_finishes_the_same_run(quick_run, tmp_path, signum):
    """Both signals take the same path; the resume is checked after one of them."""
    process = start(tmp_path)
    read_until_epoch(process, 2)
    process.send_signal(signum)
    process.wait(timeout=120)
    output = process.log.read_text()
    assert process.returncode == 128 + signum, output
    assert "Traceback" not in output
    assert f"Continue with: python train_phase2.py --resume --out {tmp_path / 'PAI'}" in output
    out = tmp_path / "PAI"
    stopped = json.loads((out / "results.json").read_text())
    assert stopped["status"] == "interrupted" and len(stopped["history"]) >= 2
    assert (out / "PAI.png").exists() and (out / stopped["checkpoint"] / "latest.pt").exists()
    if signum == signal.SIGTERM:
        return
    resumed = train_phase2.resume(str(out))
    assert resumed["status"] == "complete"
    assert metrics(resumed) == metrics(quick_run["result"])  # as if never interrupted


def test_killed_run_resumes_from_its_last_completed_epoch(rescnn_run, tmp_path):
    """SIGKILL: no handler runs. (The default model's kill and resume: test_sweep.py.)"""
    uninterrupted = rescnn_run["result"]
    process = start(tmp_path, "--model", "rescnn")
    read_until_epoch(process, 4)
    process.kill()
    process.wait(timeout=60)
    out = tmp_path / "PAI"
    killed = json.loads((out / "results.json").read_text())  # never half-written: it parses
    assert killed["status"] == "running" and len(killed["history"]) >= 4
    assert files(out / killed["checkpoint"])  # the snapshot it points to is there

    resumed = train_phase2.resume(str(out))
    assert resumed["settings"]["model"] == uninterrupted["settings"]["model"]
    assert metrics(resumed) == metrics(uninterrupted)


def test_a_run_stopped_at_its_restructure_epoch_resumes_to_the_same_result(quick_run, tmp_path, monkeypatch):
    """Right after a restructure the library's latest.pt still holds the model before it, and
    its reload forgets the current best score: the resume must replay that epoch exactly."""
    first = quick_run["result"]["restructures"][0]["epoch"]
    resumed = stopped_then_resumed(tmp_path, monkeypatch, first, "--quick")
    assert metrics(resumed) == metrics(quick_run["result"])


def test_resume_rejects_a_conflicting_flag(tmp_path, capsys):
    out = tmp_path / "PAI"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({
        "format": run_folder.RUN_FORMAT, "status": "interrupted", "history": [],
        "schema": SCHEMA, "settings": RunConfig(quick=True).resolved().as_settings()}))
    message = fails(["--resume", "--out", str(out), "--lr", "0.01"], capsys)
    assert "--lr 0.01 conflicts with the run's 0.001" in message


@pytest.mark.parametrize("flags, stop", [
    # The library's reload also forgets its learning-rate search's state: a dendritic run
    # stopped the epoch before the tracker ends it would run on past that end.
    (["--schedule", "plateau"], -1),
    # A plain run's schedule is part of its checkpoint: cosine would start over.
    (["--no-dendrites", "--schedule", "cosine", "--epochs", "12", "--min-epochs", "12"], 4)])
def test_a_scheduled_run_stopped_then_resumed_gives_the_same_result(tmp_path, monkeypatch, flags, stop):
    flags = ["--quick", "--graph-at-end", "--no-export", *flags]  # neither the graph nor the export is under test
    whole, _ = run(tmp_path, *flags, out="whole")
    last = stop if stop > 0 else whole["final"]["epochs"] + stop
    resumed = stopped_then_resumed(tmp_path, monkeypatch, last, *flags)
    assert [(r["epoch"], r["lr"], r["val_acc"]) for r in resumed["history"]] == [
        (r["epoch"], r["lr"], r["val_acc"]) for r in whole["history"]]
    assert resumed["final"]["test_acc"] == whole["final"]["test_acc"]


def test_a_run_resumed_in_the_librarys_learning_rate_search_continues_that_search(tmp_path, monkeypatch):
    """With a schedule, after adding dendrites the tracker searches how many of the schedule's
    steps to skip, epoch by epoch. Its reload forgets where that search was; the resumed
    tracker must hold exactly the state the stopped one had, not only give the same history."""
    mnist_recipe = ["--optimizer", "adadelta", "--lr", "1", "--schedule", "step"]  # the library's MNIST example's
    flags = ["--quick", "--graph-at-end", "--no-export", *mnist_recipe]  # neither the graph nor the export under test
    whole, _ = run(tmp_path, *flags, out="whole")
    # The search reloads the model as it goes (those epochs a resume replays); stop after its last reload.
    stop = max(r["epoch"] for r in whole["restructures"] if r["kind"] == "reloaded") + 1

    def tracker_state():
        return {key: copy.deepcopy(value) for key, value in dendrites.GPA.pai_tracker.member_vars.items()
                if isinstance(value, (bool, int, float, str, list, type(None)))}
    states = {}
    save_epoch, resume = run_folder.RunFolder.save_epoch, dendrites.PerforatedTracker.resume

    def save_and_note(self, row, *args):
        save_epoch(self, row, *args)
        if row["epoch"] == stop:
            states["stopped"] = tracker_state()

    def resume_and_note(self, *args):
        model = resume(self, *args)
        states["resumed"] = tracker_state()
        return model
    monkeypatch.setattr(run_folder.RunFolder, "save_epoch", save_and_note)
    monkeypatch.setattr(dendrites.PerforatedTracker, "resume", resume_and_note)
    resumed = stopped_then_resumed(tmp_path, monkeypatch, stop, *flags)
    assert states["stopped"]["current_step_count"] > 0  # mid-search: there is a state to lose
    # Every value the stopped tracker held (its optimizer and scheduler objects are rebuilt, not compared)
    assert {key: states["resumed"].get(key) for key in states["stopped"]} == states["stopped"]
    assert [(r["epoch"], r["lr"], r["val_acc"]) for r in resumed["history"]] == [
        (r["epoch"], r["lr"], r["val_acc"]) for r in whole["history"]]
