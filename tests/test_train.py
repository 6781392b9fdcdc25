"""The demo end to end: real runs of train_phase2 on small real data, no mocks."""
import io
import json
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

import train_phase2
from conftest import ROOT, run

RESTRUCTURE = ">>> MODEL RESTRUCTURED (Phase 2 triggered)"


def parse_epoch_lines(log):
    rows = []
    for line in log.splitlines():
        if line.startswith("epoch="):
            rows.append({k: float(v) for k, v in (kv.split("=") for kv in line.split())})
    return rows


def test_tracker_restructures_and_completes(quick_run):
    result, log = quick_run["result"], quick_run["log"]
    assert log.count(RESTRUCTURE) == len(result["restructures"]) >= 2
    kinds = [e["kind"] for e in result["restructures"]]
    assert kinds[0] == "dendrites added" and kinds[-1] == "training complete"
    assert result["final"]["tracker_complete"] is True
    assert result["phase1"]["dendrite_modules"] == [".conv1", ".conv2", ".fc1", ".fc2"]
    added = result["restructures"][0]
    assert added["params_after"] > added["params_before"] == result["settings"]["plain_params"]
    pattern = re.compile(re.escape(RESTRUCTURE) + r" epoch (\d+): (dendrites added|dendrites rolled back|"
                         r"training complete): .+ \| params ([\d,]+) -> ([\d,]+) \| val_acc ([\d.]+)$")
    lines = [pattern.match(line) for line in log.splitlines() if line.startswith(RESTRUCTURE)]
    for match, event in zip(lines, result["restructures"]):
        assert match, "a restructure line lacks what happened, parameters or the score"
        assert (int(match[1]), match[2]) == (event["epoch"], event["kind"])
        assert int(match[4].replace(",", "")) == event["params_after"]


def test_library_graph_written_by_this_run(quick_run):
    graph = quick_run["out"] / "PAI.png"
    assert graph.stat().st_mtime >= quick_run["started"]
    with Image.open(graph) as image:
        image.verify()
    with Image.open(graph) as image:
        assert image.format == "PNG" and image.size == (2800, 1400)  # the library's own figure


def test_a_sweep_run_draws_the_graph_once_at_the_end(quick_run, tmp_path):
    """--graph-at-end (every sweep run): the library's graph, drawn only at the end, and the
    same run otherwise."""
    result, _ = run(tmp_path, "--quick", "--graph-at-end")
    assert result["restructures"] and not any(row["graph_drawn"] for row in result["history"])
    assert any(row["graph_drawn"] for row in quick_run["result"]["history"])  # by default: at restructures
    with Image.open(tmp_path / "PAI" / "PAI.png") as image:
        assert image.size == (2800, 1400)
    same = ("epoch", "train_loss", "val_acc", "test_acc", "params")
    assert [{k: r[k] for k in same} for r in result["history"]] == [{k: r[k] for k in same}
                                                                    for r in quick_run["result"]["history"]]


def test_results_json_agrees_with_the_log(quick_run):
    result, out = quick_run["result"], quick_run["out"]
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(result))
    logged = parse_epoch_lines(quick_run["log"])
    assert len(logged) == len(result["history"]) == result["final"]["epochs"]
    for line, row in zip(logged, result["history"]):
        assert line["epoch"] == row["epoch"]
        assert line["val_acc"] == pytest.approx(row["val_acc"], abs=0.006)
        assert line["test_acc"] == pytest.approx(row["test_acc"], abs=0.006)
        assert line["params"] == row["params"]


def test_final_accuracy_is_the_best_validation_epochs(quick_run):
    result = quick_run["result"]
    final = result["final"]
    best_row = result["history"][final["best_epoch"] - 1]
    assert final["val_acc"] == pytest.approx(best_row["val_acc"])
    assert final["test_acc"] == pytest.approx(best_row["test_acc"])
    assert final["val_acc"] == max(r["val_acc"] for r in result["history"] if r["best"])


def test_evaluate_reloads_the_saved_model(quick_run):
    args = train_phase2.parse_args(["--evaluate", "--out", str(quick_run["out"])])
    evaluated = train_phase2.main(args)
    assert evaluated["test_acc"] == pytest.approx(quick_run["result"]["final"]["test_acc"])


@pytest.mark.parametrize("fixture", ["quick_run", "rescnn_run", "bf16_run"])
def test_torchscript_model_reproduces_the_run_without_perforatedai(fixture, request):
    run_ = request.getfixturevalue(fixture)
    out, final = run_["out"], run_["result"]["final"]
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
import data
splits = data.subset(data.load("digits"), {train_phase2.QUICK["n_train"]}, {train_phase2.QUICK["n_eval"]})  # --quick
model = torch.jit.load({str(out / "model.ts")!r})
with torch.no_grad():
    predictions = model(splits.test[0]).argmax(1)
print((predictions == splits.test[1]).float().mean().item() * 100)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == pytest.approx(final["test_acc"], abs=1e-9)


def test_rescnn_converts_and_grows_dendrites(rescnn_run):
    result = rescnn_run["result"]
    assert result["settings"]["model"] == "rescnn" and result["settings"]["plain_params"] == 1_926
    modules = result["phase1"]["dendrite_modules"]
    assert sorted(modules) == [".block1.body1.0", ".block1.body2.0", ".block2.body1.0", ".block2.body2.0",
                               ".down.0", ".head", ".stem.0"]  # every conv and the head; BatchNorm only tracked
    kinds = [e["kind"] for e in result["restructures"]]
    assert kinds[0] == "dendrites added" and kinds[-1] == "training complete"
    assert result["final"]["dendrite_sets"] >= 1 and result["final"]["params"] > 1_926


def test_bf16_dendritic_run_restructures_and_records_its_precision(bf16_run, quick_run):
    result = bf16_run["result"]
    assert result["settings"]["precision"] == "bf16" and quick_run["result"]["settings"]["precision"] == "fp32"
    kinds = [e["kind"] for e in result["restructures"]]
    assert kinds[0] == "dendrites added" and kinds[-1] == "training complete"
    from test_failures import metrics

    assert metrics(result)[0] != metrics(quick_run["result"])[0]  # autocast really changed the arithmetic


def test_bf16_plain_run_completes(bf16_run, tmp_path):
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--precision", "bf16", out="plain")
    assert result["status"] == "complete" and result["settings"]["precision"] == "bf16"
    evaluated = train_phase2.main(train_phase2.parse_args(["--evaluate", "--out", str(tmp_path / "plain")]))
    assert evaluated["test_acc"] == pytest.approx(result["final"]["test_acc"])  # the fp32 export, same accuracy


USER_MODEL = """
import torch.nn as nn


def small_cnn(in_channels, image_size, num_classes, width):
    channels = max(1, round(16 * width))
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, num_classes))
"""


def test_users_own_model_trains_with_dendrites_through_model_option(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_models.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)  # the user's module sits in the folder the command runs from
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    train_phase2.cli(["--quick", "--model", "my_models:small_cnn", "--width", "0.5", "--out", "run"])
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["settings"]["model"] == "my_models:small_cnn"
    assert result["settings"]["plain_params"] == 8 * 9 + 8 + 32 * 10 + 10
    assert result["phase1"]["dendrite_modules"] == [".0", ".4"]
    assert result["restructures"][0]["kind"] == "dendrites added"
    assert "model: my_models:small_cnn, 410 parameters" in capsys.readouterr().out
    assert (tmp_path / "run" / "model.ts").exists()


def test_wandb_offline_logs_history_restructures_and_the_graph(quick_run, tmp_path, monkeypatch):
    from test_failures import metrics

    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    result, _ = run(tmp_path, "--quick", "--wandb")
    assert metrics(result) == metrics(quick_run["result"])  # logging changes nothing in training
    (offline,) = (tmp_path / "PAI" / "wandb").glob("offline-run-*")
    assert offline.name.endswith(result["wandb_id"])
    records = next(offline.glob("*.wandb")).read_bytes()
    for key in (b"val_acc", b"test_acc", b"dendrite_sets", b"restructure/kind", b"dendrites added"):
        assert key in records, key
    (image,) = offline.glob("files/media/images/PAI.png_*.png")
    with Image.open(image) as graph:
        assert graph.size == (2800, 1400)  # the library's own figure


def test_wandb_not_installed_is_a_one_line_error(quick_run, monkeypatch, capsys):
    from test_failures import fails, files

    monkeypatch.setitem(sys.modules, "wandb", None)  # any import of wandb now fails
    before = files(quick_run["out"])
    assert "--wandb needs the wandb package: pip install wandb" in fails(
        ["--out", str(quick_run["out"]), "--wandb"], capsys)
    assert files(quick_run["out"]) == before


def test_progress_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for file, shown in ((io.StringIO(), False), (Terminal(), True)):
        for _ in train_phase2.progress(range(5), file=file, delay=0):
            pass
        assert ("train:" in file.getvalue() and "/5 [" in file.getvalue()) == shown


def test_cleaned_model_difference_is_measured_and_reported(quick_run):
    """perforatedai 3.2.9's prepare_final_model drops the dendrites of a layer with exactly
    one set; the run must say so, and model.ts must still be the trained model."""
    out, result = quick_run["out"], quick_run["result"]
    clean = torch.load(out / "model_clean.pt", weights_only=False)
    traced = torch.jit.load(str(out / "model.ts"))
    images = torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        difference = (clean.eval()(images) - traced(images)).abs().max().item()
    reported = result["final"]["clean_model_max_logit_difference"]
    assert (difference > 1e-4) == (reported > 1e-4)
    assert ("warning: the library's cleaned model" in quick_run["log"]) == (reported > 1e-4)


def test_capacity_test_adds_three_sets_one_per_epoch(tmp_path):
    result, _ = run(tmp_path, "--quick", "--capacity-test")
    kinds = [e["kind"] for e in result["restructures"]]
    assert kinds == ["dendrites added"] * 3 + ["training complete"]
    assert [e["epoch"] for e in result["restructures"]] == [1, 2, 3, 4]
    assert result["final"]["dendrite_sets"] == 3
    assert (tmp_path / "PAI" / "PAI.png").exists()


def test_no_dendrites_is_the_same_loop_without_the_library(tmp_path):
    result, args = run(tmp_path, "--quick", "--no-dendrites", out="plain")
    out = tmp_path / "plain"
    assert not list(out.glob("PAI*")) and not (out / "plain.png").exists()
    assert result["restructures"] == [] and result["final"]["dendrite_sets"] == 0
    final, history = result["final"], result["history"]
    assert final["params"] == result["settings"]["plain_params"] == 1_034
    stopped_early = final["epochs"] - final["best_epoch"] == args.patience
    assert stopped_early or final["epochs"] == args.epochs
    assert final["test_acc"] == pytest.approx(history[final["best_epoch"] - 1]["test_acc"])
    assert final["val_acc"] == max(r["val_acc"] for r in history)


def test_min_epochs_holds_off_early_stopping(tmp_path):
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--min-epochs", "25", "--patience", "1")
    assert result["final"]["epochs"] >= 25


def test_command_line_failure_from_a_real_process(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "train_phase2.py"), "--dataset", "imagenet",
                           "--out", str(tmp_path / "PAI")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: argument --dataset: invalid choice") and "Traceback" not in done.stderr


def test_distillation_loss_is_the_labels_cross_entropy_when_its_weight_is_zero():
    torch.manual_seed(0)
    teacher = torch.nn.Linear(5, 3)
    images, labels, logits = torch.randn(8, 5), torch.randint(0, 3, (8,)), torch.randn(8, 3)
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.equal(train_phase2.Distillation(teacher, 0.0, 4.0)(logits, images, labels), plain)
    copying = train_phase2.Distillation(teacher, 1.0, 4.0)(teacher(images).detach(), images, labels)
    assert copying.item() == pytest.approx(0.0, abs=1e-6)  # a student that matches its teacher: no soft loss


def test_a_narrow_cnn_distils_from_a_runs_exported_model(quick_run, tmp_path):
    teacher = quick_run["out"] / "model.ts"
    result, args = run(tmp_path, "--quick", "--no-dendrites", "--teacher", str(teacher), "--distill-weight", "0.7")
    assert result["status"] == "complete" and result["settings"]["teacher"] == str(teacher)
    assert result["final"]["params"] == quick_run["result"]["settings"]["plain_params"]  # the student's size
    without = run(tmp_path, "--quick", "--no-dendrites", out="plain")[0]
    assert [r["train_loss"] for r in result["history"]] != [r["train_loss"] for r in without["history"]]
    evaluated = train_phase2.main(train_phase2.parse_args(["--evaluate", "--out", str(tmp_path / "PAI")]))
    assert evaluated["test_acc"] == result["final"]["test_acc"]  # the exported student reproduces it
