"""neuroshrink/stopping.py: one tracker interface; early stopping and the restart control."""
import inspect

import pytest

from conftest import run
from neuroshrink import dendrites, stopping


def protocol_members():
    return {name for name in vars(stopping.Tracker) if not name.startswith("_")} | set(
        stopping.Tracker.__annotations__)


@pytest.mark.parametrize("tracker", [dendrites.PerforatedTracker, stopping.EarlyStopping])
def test_both_trackers_satisfy_the_one_tracker_interface(tracker):
    """The training loop drives the library's tracker and early stopping alike: each has every
    member of stopping.Tracker, its methods taking the same arguments."""
    members = protocol_members()
    assert {"add_scores", "new_optimizer", "files", "scheduler", "final_model"} <= members
    attributes = set(vars(stopping.EarlyStopping(patience=2))) if tracker is stopping.EarlyStopping else set()
    for name in members:
        assert hasattr(tracker, name) or name in attributes, f"{tracker.__name__} lacks {name}"
        wanted = getattr(stopping.Tracker, name, None)
        if inspect.isfunction(wanted):
            assert list(inspect.signature(getattr(tracker, name)).parameters) == list(
                inspect.signature(wanted).parameters), name
    instance = stopping.EarlyStopping(patience=2)
    assert isinstance(instance, stopping.Tracker)  # runtime_checkable: every member present


def test_no_dendrites_is_the_same_loop_without_the_library(tmp_path):
    result, args = run(tmp_path, "--quick", "--no-dendrites", out="plain")
    out = tmp_path / "plain"
    assert not list(out.glob("PAI*")) and not (out / "plain.png").exists()
    assert result["restructures"] == [] and result["final"]["dendrite_sets"] == 0
    final, history = result["final"], result["history"]
    assert final["params"] == result["settings"]["plain_params"] == 1_034
    stopped_early = final["epochs"] - final["best_epoch"] == args.patience
    assert stopped_early or final["epochs"] == args.epochs
    assert final["val_acc"] == pytest.approx(history[final["best_epoch"] - 1]["val_acc"])  # that epoch's model
    assert final["val_acc"] == max(r["val_acc"] for r in history)


def test_min_epochs_holds_off_early_stopping(tmp_path):
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--min-epochs", "25", "--patience", "1")
    assert result["final"]["epochs"] >= 25


def test_a_schedule_is_stepped_every_epoch_and_restarted_by_the_control(tmp_path):
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--optimizer", "adadelta", "--lr", "1",
                    "--schedule", "step", "--min-epochs", "8", "--restart-at", "3", "5")
    lrs = [r["lr"] for r in result["history"]]
    assert lrs[:8] == pytest.approx([1, 0.7, 0.49, 1, 0.7, 1, 0.7, 0.49])  # StepLR(1, 0.7), rebuilt after 3 and 5
    assert [r["epoch"] for r in result["restructures"]] == [3, 5]


def test_the_control_trains_each_epoch_at_the_traced_learning_rate(tmp_path):
    trace = [1, 1, 0.7, 0.5, 1, 0.7]
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--optimizer", "adadelta", "--lr", "1",
                    "--schedule", "step", "--min-epochs", "8", "--restart-at", "4", "--lr-trace", *map(str, trace))
    lrs = [r["lr"] for r in result["history"]]
    assert lrs[:8] == pytest.approx(trace + [0.49, 0.343])  # then the schedule goes on from the last
