"""The demo end to end: real runs of train_phase2 on small real data, no mocks; every bad
input is one line and changes nothing; a run is reproducible and offline."""
import json
import re
import subprocess
import sys

import pytest
from PIL import Image

import train_phase2
from conftest import ROOT, fails, files, full_size_graphs, make_fashion, metrics, refuse_network, run
from experiments import run as run_command
from neuroshrink.config import flag
from neuroshrink.options import demo_names


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
    with full_size_graphs():
        result, _ = run(tmp_path, "--quick", "--graph-at-end")
    assert result["restructures"] and not any(row["graph_drawn"] for row in result["history"])
    assert any(row["graph_drawn"] for row in quick_run["result"]["history"])  # by default: at restructures
    with Image.open(tmp_path / "PAI" / "PAI.png") as image:
        assert image.size == (2800, 1400)
    same = ("epoch", "train_loss", "val_acc", "test_acc", "params")
    assert [{k: r[k] for k in same} for r in result["history"]] == [{k: r[k] for k in same}
                                                                    for r in quick_run["result"]["history"]]


def test_a_dendritic_run_that_draws_no_graph_scores_no_test_split_each_epoch(quick_run, tmp_path):
    """A study's search trial (--no-export, drawn at the end: never): the library's graph is the
    only reader of each epoch's test score, so none is measured, and the run trains as one that
    does (the score is optional to the tracker: its decisions follow validation)."""
    result, _ = run(tmp_path, "--quick", "--no-export", "--graph-at-end")
    assert [row["test_acc"] for row in result["history"]] == [None] * len(result["history"])
    assert not (tmp_path / "PAI" / "PAI.png").exists()
    same = ("epoch", "train_loss", "val_acc", "params", "dendrite_sets")
    assert [{k: r[k] for k in same} for r in result["history"]] == [{k: r[k] for k in same}
                                                                    for r in quick_run["result"]["history"]]
    assert result["restructures"] == quick_run["result"]["restructures"]
    assert result["final"]["test_acc"] == quick_run["result"]["final"]["test_acc"]


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


BAD_FLAGS = [
    (["--dataset", "imagenet"], "choose from digits, mnist, fashion-mnist, cifar10, folder:PATH, npz:PATH"),
    (["--device", "tpu"], "choose from 'auto', 'cpu', 'cuda', 'mps'"),
    (["--precision", "fp8"], "choose from 'auto', 'fp32', 'bf16', 'fp16'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--width", "0"], "must be a finite number > 0"),
    (["--width", "-1"], "must be a finite number > 0"),
    (["--width", "wide"], "'wide' is not a number"),
    (["--width", "0.001"], "width 0.001 leaves a layer with no units"),
    (["--epochs", "0"], "must be a finite number > 0"),
    (["--epochs", "2.5"], "'2.5' is not a number"),
    (["--batch-size", "-64"], "must be a finite number > 0"),
    (["--lr", "nan"], "must be a finite number > 0"),
    (["--lr", "inf"], "must be a finite number > 0"),
    (["--patience", "0"], "must be a finite number > 0"),
    (["--max-dendrites", "x"], "'x' is not a number"),
    (["--dropout", "1"], "'1' must be below 1"),
    (["--improvement-threshold", "0.01", "-1"], "'-1' must be a finite number >= 0"),
    (["--dendrite-activation", "gelu"], "choose from 'sigmoid', 'relu', 'tanh'"),
    (["--model", "rescnn", "--dropout", "0.3"], "--dropout: the model rescnn has no nn.Dropout layer"),
    (["--teacher", "no/such/model.ts"], "--teacher no/such/model.ts: cannot load it as a TorchScript model"),
    (["--distill-weight", "1.5"], "'1.5' must be below 1"),
    (["--optimizer", "sgd"], "choose from 'adam', 'adamw', 'adadelta'"),
    (["--schedule", "onecycle"], "choose from 'none', 'cosine', 'step', 'plateau'"),
    (["--params", "1000"], "--params: only for plain runs (add --no-dendrites)"),
    (["--restart-at", "3"], "--restart-at: only for plain runs (add --no-dendrites)"),
    (["--no-dendrites", "--prune-from", "x"], "--prune-from needs --params"),
    (["--no-dendrites", "--params", "0"], "must be a finite number > 0"),
    (["--no-dendrites", "--params", "1000", "--model", "rescnn"],
     "--params 1000: the nearest width, 0.0820312, gives 882 parameters, more than 10% from 1,000"),
    (["--no-dendrites", "--params", "1000", "--prune-from", "no/such/run"],
     "--prune-from no/such/run: not a finished plain run (--no-dendrites) folder"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS)
def test_bad_flag_changes_nothing(quick_run, capsys, flags, message):
    """The demo's flags on train_phase2.py, the experiments' controls on python -m experiments.run."""
    demo = {flag(name) for name in demo_names()}
    command = train_phase2.cli if {f for f in flags if f.startswith("--")} <= demo | {"--bogus"} else run_command.main
    before = files(quick_run["out"])
    assert message in fails(["--out", str(quick_run["out"]), *flags], capsys, command)
    assert files(quick_run["out"]) == before


def bad_data(tmp_path, case):
    folder = tmp_path / "fashion"
    folder.mkdir()
    make_fashion(folder, gz=True)
    if case == "missing folder":
        return ["--data-dir", str(tmp_path / "nowhere")], "does not exist"
    if case == "missing file":
        (folder / "train-labels-idx1-ubyte.gz").unlink()
        return ["--data-dir", str(folder)], "could not be downloaded"
    if case == "truncated file":
        path = folder / "t10k-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:-200])
        return ["--data-dir", str(folder)], "t10k-images-idx3-ubyte.gz"
    if case == "no data, no network":
        return ["--dataset", "mnist", "--data-dir", str(tmp_path)], "mnist is not in"


@pytest.mark.parametrize("case", ["missing folder", "missing file", "truncated file", "no data, no network"])
def test_bad_data_changes_nothing(quick_run, tmp_path, capsys, no_network, case):
    flags, message = bad_data(tmp_path, case)
    flags = flags if "--dataset" in flags else ["--dataset", "fashion-mnist", *flags]
    before = files(quick_run["out"])
    assert message in fails(["--out", str(quick_run["out"]), "--quick", *flags], capsys)
    assert files(quick_run["out"]) == before
    tried_to_download = case in ("missing file", "no data, no network")
    assert bool(no_network) == tried_to_download  # and the refused connection is the error


def test_command_line_failure_from_a_real_process(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "train_phase2.py"), "--dataset", "imagenet",
                           "--out", str(tmp_path / "PAI")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: argument --dataset: invalid choice") and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def offline_rerun(tmp_path_factory):
    """The quick run once more, same seed, with every socket refused and recorded."""
    tmp = tmp_path_factory.mktemp("offline")
    with pytest.MonkeyPatch.context() as patch:
        attempts = refuse_network(patch)
        result, _ = run(tmp, "--quick")
    return result, attempts


def test_same_seed_gives_identical_results(quick_run, offline_rerun):
    assert metrics(offline_rerun[0]) == metrics(quick_run["result"])


def test_a_run_makes_no_network_connection(offline_rerun):
    result, attempts = offline_rerun
    assert result["status"] == "complete" and attempts == []


def test_a_plain_run_scores_the_test_split_once_on_the_model_validation_chose(tmp_path, capsys):
    """Only the library plots a test score each epoch; a plain run's is measured at the end."""
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--epochs", "3")
    history = result["history"]
    assert history and [row["test_acc"] for row in history] == [None] * len(history)
    epochs = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch=")]
    assert len(epochs) == len(history) and not any("test_acc=" in line for line in epochs)
    assert train_phase2.evaluate_saved(tmp_path / "PAI")["test_acc"] == result["final"]["test_acc"]
