"""neuroshrink/training.py: the losses, the progress bar, a distilled run."""
import io

import pytest
import torch

import train_phase2
from conftest import run
from neuroshrink import training


def test_progress_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for file, shown in ((io.StringIO(), False), (Terminal(), True)):
        for _ in training.progress(range(5), file=file, delay=0):
            pass
        assert ("train:" in file.getvalue() and "/5 [" in file.getvalue()) == shown


def test_distillation_loss_is_the_labels_cross_entropy_when_its_weight_is_zero():
    torch.manual_seed(0)
    teacher = torch.nn.Linear(5, 3)
    images, labels, logits = torch.randn(8, 5), torch.randint(0, 3, (8,)), torch.randn(8, 3)
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.equal(training.Distillation(teacher, 0.0, 4.0)(logits, images, labels), plain)
    copying = training.Distillation(teacher, 1.0, 4.0)(teacher(images).detach(), images, labels)
    assert copying.item() == pytest.approx(0.0, abs=1e-6)  # a student that matches its teacher: no soft loss


def test_a_narrow_cnn_distils_from_a_runs_exported_model(quick_run, tmp_path):
    teacher = quick_run["out"] / "model.ts"
    result, args = run(tmp_path, "--quick", "--no-dendrites", "--teacher", str(teacher), "--distill-weight", "0.7")
    assert result["status"] == "complete" and result["settings"]["teacher"] == str(teacher)
    assert result["final"]["params"] == quick_run["result"]["settings"]["plain_params"]  # the student's size
    without = run(tmp_path, "--quick", "--no-dendrites", out="plain")[0]
    assert [r["train_loss"] for r in result["history"]] != [r["train_loss"] for r in without["history"]]
    evaluated = train_phase2.evaluate_saved(str(tmp_path / "PAI"))
    assert evaluated["test_acc"] == result["final"]["test_acc"]  # the exported student reproduces it
