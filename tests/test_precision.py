"""neuroshrink/precision.py: bf16 training where the CPU has it; what the machine lacks is refused."""
import pytest
import torch

import train_phase2
from conftest import fails, files, metrics, run


def test_bf16_dendritic_run_restructures_and_records_its_precision(bf16_run, quick_run):
    result = bf16_run["result"]
    assert result["settings"]["precision"] == "bf16" and quick_run["result"]["settings"]["precision"] == "fp32"
    kinds = [e["kind"] for e in result["restructures"]]
    assert kinds[0] == "dendrites added" and kinds[-1] == "training complete"

    assert metrics(result)[0] != metrics(quick_run["result"])[0]  # autocast really changed the arithmetic


def test_bf16_plain_run_completes(bf16_run, tmp_path):
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--precision", "bf16", out="plain")
    assert result["status"] == "complete" and result["settings"]["precision"] == "bf16"
    evaluated = train_phase2.main(train_phase2.parse_args(["--evaluate", "--out", str(tmp_path / "plain")]))
    assert evaluated["test_acc"] == pytest.approx(result["final"]["test_acc"])  # the fp32 export, same accuracy


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("flags, message", [
    (["--device", "cuda"], "--device cuda is not available here; choose from auto, cpu"),
    (["--precision", "fp16"], "--precision fp16 is not available on cpu here; choose from fp32"),
])
def test_what_this_machine_cannot_do_changes_nothing(quick_run, capsys, flags, message):
    before = files(quick_run["out"])
    assert message in fails(["--out", str(quick_run["out"]), *flags], capsys)
    assert files(quick_run["out"]) == before
