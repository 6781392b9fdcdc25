"""neuroshrink/export.py: the exported models (TorchScript, ONNX, int8 ONNX) reproduce the run,
with neither the library nor torch; an export that fails keeps the run and says so."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import train_phase2
from conftest import ROOT, fails, run
from neuroshrink import data, export


def test_evaluate_reloads_the_saved_model(quick_run, tmp_path):
    shutil.copytree(quick_run["out"], tmp_path / "PAI")  # --evaluate exports it again: the shared run stays
    evaluated = train_phase2.evaluate_saved(tmp_path / "PAI")
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
        predictions = torch.jit.load(path)(splits.normalise(splits.test[0])).argmax(1)
    print((predictions == splits.test[1]).float().mean().item() * 100)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    accuracies = [float(line) for line in done.stdout.split()]
    assert accuracies == pytest.approx([r["result"]["final"]["test_acc"] for r in runs], abs=1e-9)


@pytest.fixture(scope="module")
def plain_int8_run(tmp_path_factory):
    """A plain --quick run that also quantizes its model to int8."""
    tmp = tmp_path_factory.mktemp("plain_int8")
    return run(tmp, "--quick", "--no-dendrites", "--quantize", "int8")[0], tmp / "PAI"


def test_onnx_models_load_in_onnx_runtime_without_torch_and_give_the_runs_accuracy(quick_run, plain_int8_run,
                                                                                  tmp_path):
    """model.onnx of a dendritic and of a plain run, and the plain run's model.int8.onnx, scored on
    the test images in a fresh process where torch cannot be imported."""
    quick = train_phase2.QUICK
    splits = data.subset(data.load("digits"), quick["n_train"], quick["n_eval"])
    np.save(tmp_path / "x.npy", splits.test[0].numpy())  # raw pixels: the models normalise
    np.save(tmp_path / "y.npy", splits.test[1].numpy())
    plain, plain_out = plain_int8_run
    models = [quick_run["out"] / "model.onnx", plain_out / "model.onnx", plain_out / "model.int8.onnx"]
    script = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
import numpy as np
import onnxruntime as ort
x, y = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "y.npy")!r})
for path in {[str(m) for m in models]!r}:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    print(100.0 * float((session.run(None, {{"pixels": x}})[0].argmax(1) == y).mean()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    dendritic, fp32, int8 = (float(line) for line in done.stdout.split())
    assert dendritic == quick_run["result"]["final"]["onnx"]["test_acc"] == quick_run["result"]["final"]["test_acc"]
    assert fp32 == plain["final"]["onnx"]["test_acc"] == plain["final"]["test_acc"]
    assert int8 == plain["final"]["int8"]["test_acc"]


def test_every_run_records_its_onnx_model_checked_and_timed(quick_run):
    onnx, out = quick_run["result"]["final"]["onnx"], quick_run["out"]
    assert onnx["bytes"] == (out / "model.onnx").stat().st_size
    assert onnx["within_tolerance"] and onnx["max_logit_difference"] <= export.TOLERANCE
    for runtime in ("ort_ms", "torchscript_ms"):  # one thread, side by side
        assert set(onnx[runtime]) == {"1", "256"} and 0 < onnx[runtime]["1"] < onnx[runtime]["256"]
    assert "int8" not in quick_run["result"]["final"] and not (out / "model.int8.onnx").exists()  # not asked for
    last = quick_run["log"].strip().splitlines()[-1]
    assert last.startswith("model.onnx: ") and "ONNX Runtime, 1 thread: " in last  # the demo's last line


def test_quantize_records_int8_accuracy_bytes_and_latency(plain_int8_run):
    final, out = plain_int8_run[0]["final"], plain_int8_run[1]
    int8 = final["int8"]
    assert int8["bytes"] == (out / "model.int8.onnx").stat().st_size
    assert abs(int8["test_acc"] - final["test_acc"]) <= 10  # int8 of a tiny model: close, not equal
    assert set(int8["ort_ms"]) == {"1", "256"} and 0 < int8["ort_ms"]["1"] < int8["ort_ms"]["256"]
    assert plain_int8_run[0]["settings"]["quantize"] == "int8"


def test_onnx_runtimes_warning_per_one_dimensional_weight_is_one_line(capsys, caplog):
    """ONNX Runtime warns on the root logger for every 1-D weight it quantizes per tensor (a
    dendritic ResNet-18: 20 lines): said once, with the count; any other warning as it was."""
    import logging

    with export.per_tensor_said_once():
        for name in ("bn1.main_module.weight", "layer1.0.bn1.main_module.weight"):
            logging.warning(f"Axis 1 is out-of-range for weight '{name}' with rank 1")
        logging.warning("something else")
    assert capsys.readouterr().out == "int8: 2 one-dimensional weights quantized per tensor (per channel needs two)\n"
    assert [r.getMessage() for r in caplog.records] == ["something else"]


def test_a_finished_run_is_quantized_without_training_on_training_images_only(quick_run, tmp_path, monkeypatch):
    out = tmp_path / "PAI"
    shutil.copytree(quick_run["out"], out)
    (out / "model.onnx").unlink()  # as a run from before ONNX export would be
    seen = []
    quantize = export.quantize_int8

    def quantize_and_note(source, target, calibration_images):
        seen.append(calibration_images.clone())
        return quantize(source, target, calibration_images)
    monkeypatch.setattr(export, "quantize_int8", quantize_and_note)
    monkeypatch.setattr(train_phase2, "train_one_epoch", None)  # nothing may train
    evaluated = train_phase2.evaluate_saved(str(out), "int8")
    quick = train_phase2.QUICK
    splits = data.subset(data.load("digits"), quick["n_train"], quick["n_eval"])
    (calibration,) = seen
    assert len(calibration) == export.CALIBRATION_IMAGES  # the first training images: never validation or test
    assert torch.equal(calibration, splits.normalise(splits.train[0][:len(calibration)]))
    saved = json.loads((out / "results.json").read_text())["final"]
    assert saved["int8"] == evaluated["int8"] and saved["onnx"]["bytes"] == (out / "model.onnx").stat().st_size
    assert saved["test_acc"] == quick_run["result"]["final"]["test_acc"]  # the run's own numbers kept


UNSUPPORTED = """
import torch
import torch.nn as nn


class Frac(nn.Module):
    def forward(self, x):
        return x + torch.frac(x)  # aten::frac: no ONNX export at opset 17


def cnn_with_frac(in_channels, image_size, num_classes, width):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), Frac(), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * image_size * image_size, num_classes))
"""


def test_a_model_the_exporter_cannot_handle_keeps_its_run_and_fails_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "frac_models.py").write_text(UNSUPPORTED)
    monkeypatch.chdir(tmp_path)  # the user's module sits in the folder the command runs from
    monkeypatch.setattr(sys, "path", list(sys.path))
    message = fails(["--quick", "--no-dendrites", "--model", "frac_models:cnn_with_frac", "--out", "run"], capsys)
    assert "the run in run is saved, but its export failed: model.onnx: UnsupportedOperatorError" in message
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["status"] == "complete" and (tmp_path / "run" / "model.ts").exists()
    assert result["final"]["export_errors"][0].startswith("model.onnx: UnsupportedOperatorError: Exporting the "
                                                          "operator 'aten::frac'")
    assert "onnx" not in result["final"] and not (tmp_path / "run" / "model.onnx").exists()
    assert "export failed: model.onnx: UnsupportedOperatorError" in capsys.readouterr().out


def test_quantize_of_a_folder_without_a_finished_run_is_one_line(tmp_path, capsys):
    assert "--quantize: " in fails(["--evaluate", "--quantize", "int8", "--out", str(tmp_path / "none")], capsys)
    assert not (tmp_path / "none").exists()


def test_a_run_told_not_to_time_exports_and_checks_its_model_but_times_nothing(tmp_path, capsys):
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--no-timing", "--quantize", "int8")
    final = result["final"]
    assert final["inference_ms"] is None and final["onnx"]["within_tolerance"] and final["int8"]["bytes"] > 0
    assert not any("ort_ms" in final[key] or "torchscript_ms" in final[key] for key in ("onnx", "int8"))
    assert "model.onnx: " in capsys.readouterr().out and (tmp_path / "PAI" / "model.int8.onnx").exists()
