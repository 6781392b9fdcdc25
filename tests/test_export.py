"""neuroshrink/export.py: the exported model reproduces the run, with or without the library."""
import subprocess
import sys

import pytest

import train_phase2
from conftest import ROOT


def test_evaluate_reloads_the_saved_model(quick_run):
    args = train_phase2.parse_args(["--evaluate", "--out", str(quick_run["out"])])
    evaluated = train_phase2.main(args)
    assert evaluated["test_acc"] == pytest.approx(quick_run["result"]["final"]["test_acc"])


def test_torchscript_models_reproduce_their_runs_without_perforatedai(quick_run, rescnn_run, request):
    """model.ts of a dendritic net, a dendritic BatchNorm rescnn and (where the CPU has it) a
    bf16-trained run, loaded in one fresh process where perforatedai cannot be imported."""
    runs = [quick_run, rescnn_run]
    try:
        runs.append(request.getfixturevalue("bf16_run"))
    except pytest.skip.Exception:
        pass  # this CPU has no native bf16
    script = f"""
import sys
sys.modules["perforatedai"] = None  # any import of the library now fails
try:
    import perforatedai
    sys.exit("perforatedai was importable")
except ImportError:
    pass
sys.path.insert(0, {str(ROOT)!r})
import torch
from neuroshrink import data
splits = data.subset(data.load("digits"), {train_phase2.QUICK["n_train"]}, {train_phase2.QUICK["n_eval"]})  # --quick
for path in {[str(r["out"] / "model.ts") for r in runs]!r}:
    with torch.no_grad():
        predictions = torch.jit.load(path)(splits.test[0]).argmax(1)
    print((predictions == splits.test[1]).float().mean().item() * 100)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    accuracies = [float(line) for line in done.stdout.split()]
    assert accuracies == pytest.approx([r["result"]["final"]["test_acc"] for r in runs], abs=1e-9)
