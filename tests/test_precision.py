"""neuroshrink/precision.py: bf16 training where the CPU has it; what the machine lacks is refused."""
import pytest
import torch

import train_phase2
from conftest import fails, files, metrics, run
from neuroshrink import precision


def test_bf16_dendritic_run_restructures_and_records_its_precision(bf16_run, quick_run):
    result = bf16_run["result"]
    assert result["settings"]["precision"] == "bf16" and quick_run["result"]["settings"]["precision"] == "fp32"
    kinds = [e["kind"] for e in result["restructures"]]
    assert kinds[0] == "dendrites added" and kinds[-1] == "training complete"

    assert metrics(result)[0] != metrics(quick_run["result"])[0]  # autocast really changed the arithmetic


def test_bf16_plain_run_completes(bf16_run, tmp_path):
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--precision", "bf16", out="plain")
    assert result["status"] == "complete" and result["settings"]["precision"] == "bf16"
    evaluated = train_phase2.evaluate_saved(str(tmp_path / "plain"))
    assert evaluated["test_acc"] == pytest.approx(result["final"]["test_acc"])  # the fp32 export, same accuracy


def test_auto_takes_a_lower_precision_only_where_it_was_measured_faster():
    assert precision.choose({"fp32": 10.0}) == "fp32"
    assert precision.choose({"fp32": 10.0, "bf16": 8.9}) == "bf16"
    assert precision.choose({"fp32": 10.0, "bf16": 9.5}) == "fp32"   # within 10 %: not worth the rounding
    assert precision.choose({"fp32": 10.0, "bf16": 12.0}) == "fp32"  # AVX512-BF16 convolutions, slower than fp32
    assert precision.choose({"fp32": 10.0, "bf16": 6.0, "fp16": 3.0}) == "bf16"  # fp16 only where bf16 is missing
    assert precision.choose({"fp32": 10.0, "fp16": 3.0}) == "fp16"


def test_auto_resolves_to_a_precision_this_device_has_and_records_it(tmp_path, monkeypatch):
    from neuroshrink import build

    measure, measured_runs = precision.measure, []
    monkeypatch.setattr(precision, "measure", lambda *a, **k: measured_runs.append(1) or measure(*a, **k))
    monkeypatch.setattr(build, "MEASURED_PRECISIONS", {})  # as a fresh worker
    first, _ = run(tmp_path / "a", "--quick", "--no-dendrites", "--precision", "auto")
    second, _ = run(tmp_path / "b", "--quick", "--no-dendrites", "--precision", "auto", "--seed", "2")
    wider, _ = run(tmp_path / "c", "--quick", "--no-dendrites", "--precision", "auto", "--width", "0.25")
    measured = first["precision"]
    assert first["settings"]["precision"] == "auto"
    assert set(measured["ms_per_step"]) == set(precision.available(torch.device("cpu")))
    assert measured["chosen"] == precision.choose(measured["ms_per_step"])
    # The same architecture again in this process: measured once; another architecture: measured.
    assert second["precision"] == measured | {"measured_before": True} and "measured_before" not in wider["precision"]
    assert len(measured_runs) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("flags, message", [
    (["--device", "cuda"], "--device cuda is not available here; choose from auto, cpu"),
    (["--precision", "fp16"], "--precision fp16 is not available on cpu here; choose from auto, fp32"),
])
def test_what_this_machine_cannot_do_changes_nothing(quick_run, capsys, flags, message):
    before = files(quick_run["out"])
    assert message in fails(["--out", str(quick_run["out"]), *flags], capsys)
    assert files(quick_run["out"]) == before


def test_auto_choosing_fp32_trains_exactly_the_fp32_run(tmp_path, monkeypatch):
    """auto's measurement runs the model's dropout on a copy: it must not move the random
    numbers the run draws next, or the same seed would train another run."""
    monkeypatch.setattr(precision, "choose", lambda times: "fp32")
    result, _ = run(tmp_path / "auto", "--quick", "--no-dendrites", "--epochs", "3", "--precision", "auto")
    assert result["precision"]["chosen"] == "fp32" and "fp32" in result["precision"]["ms_per_step"]  # measured
    fp32, _ = run(tmp_path / "fp32", "--quick", "--no-dendrites", "--epochs", "3", "--precision", "fp32")
    assert metrics(result) == metrics(fp32)
