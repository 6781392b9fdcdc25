"""Never lose a run: bad input, interruption and resume, the library's failure modes,
reproducibility and no network. Real runs and real processes, no mocks of the library."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import dendrites
import run_folder
import train_phase2
from model import Net
from recipes import Recipe
from conftest import ROOT, refuse_network, run, stopped_then_resumed
from test_data import make_fashion

METRICS = ("epoch", "train_loss", "train_acc", "val_acc", "test_acc", "params", "dendrite_sets", "best")


def files(folder):
    """Every file under `folder` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics(result):
    """What must be identical between two runs of the same seed: everything but the clock."""
    final = {k: v for k, v in result["final"].items() if k not in ("wall_seconds", "timing_seconds", "inference_ms")}
    return [{k: row[k] for k in METRICS} for row in result["history"]], result["restructures"], final


def fails(argv, capsys):
    """cli(argv) must exit non-zero with one line starting 'error:' and no traceback."""
    with pytest.raises(SystemExit) as exit_:
        train_phase2.cli(argv)
    code = exit_.value.code
    message = code if isinstance(code, str) else capsys.readouterr().err
    assert code not in (0, None)
    assert message.strip().count("\n") == 0 and message.startswith("error:"), message
    assert "Traceback" not in message
    return message


# ---------------------------------------------------------------- bad input

BAD_FLAGS = [
    (["--dataset", "imagenet"], "choose from 'digits', 'mnist', 'fashion-mnist', 'cifar10'"),
    (["--device", "tpu"], "choose from 'auto', 'cpu', 'cuda', 'mps'"),
    (["--precision", "fp8"], "choose from 'fp32', 'bf16', 'fp16'"),
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
    (["--optimizer", "sgd"], "choose from 'adam', 'adadelta'"),
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
    before = files(quick_run["out"])
    assert message in fails(["--out", str(quick_run["out"]), *flags], capsys)
    assert files(quick_run["out"]) == before


USER_MODELS = """
import torch.nn as nn


def broken(in_channels, image_size, num_classes, width):
    raise RuntimeError("out of ideas")


def not_a_module(in_channels, image_size, num_classes, width):
    return 42


def five_classes(in_channels, image_size, num_classes, width):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, 5))


def wrong_input(in_channels, image_size, num_classes, width):
    return nn.Linear(3, num_classes)

answer = 42
"""

BAD_MODELS = [
    ("resnet50", "--model resnet50: unknown model; choose from net, rescnn, or give package.module:factory"),
    ("no_such_module:make", "--model no_such_module:make: cannot import no_such_module (ModuleNotFoundError"),
    ("user_models_{n}:missing", "--model user_models_{n}:missing: user_models_{n} has no callable 'missing'"),
    ("user_models_{n}:answer", "has no callable 'answer'"),
    ("user_models_{n}:broken", "broken(in_channels=1, image_size=8, num_classes=10, width=0.125) raised "
                               "RuntimeError: out of ideas"),
    ("user_models_{n}:not_a_module", "the factory returned int, not a torch.nn.Module"),
    ("user_models_{n}:five_classes", "it maps a batch of shape (2, 1, 8, 8) to (2, 5); expected logits of shape (2, 10)"),
    ("user_models_{n}:wrong_input", "its forward pass on a batch of shape (2, 1, 8, 8) raised RuntimeError"),
]


@pytest.mark.parametrize("n, spec, message", [(n, *case) for n, case in enumerate(BAD_MODELS)])
def test_bad_model_changes_nothing(quick_run, tmp_path, monkeypatch, capsys, n, spec, message):
    (tmp_path / f"user_models_{n}.py").write_text(USER_MODELS)  # a fresh module name: no import cache
    monkeypatch.chdir(tmp_path)  # --model imports from the current folder
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = files(quick_run["out"])
    assert message.format(n=n) in fails(["--out", str(quick_run["out"]), "--model", spec.format(n=n)], capsys)
    assert files(quick_run["out"]) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("flags, message", [
    (["--device", "cuda"], "--device cuda is not available here; choose from auto, cpu"),
    (["--precision", "fp16"], "--precision fp16 is not available on cpu here; choose from fp32"),
])
def test_what_this_machine_cannot_do_changes_nothing(quick_run, capsys, flags, message):
    before = files(quick_run["out"])
    assert message in fails(["--out", str(quick_run["out"]), *flags], capsys)
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


# ---------------------------------------------------------------- interruption and resume

def start(tmp_path, *flags):
    return subprocess.Popen([sys.executable, "-u", str(ROOT / "train_phase2.py"), "--quick", *flags,
                             "--out", str(tmp_path / "PAI")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until_epoch(process, epoch):
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(f"epoch={epoch} "):
            return seen
    raise AssertionError("the run ended before epoch %d:\n%s" % (epoch, "".join(seen)))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_safely_and_resume_finishes_the_same_run(quick_run, tmp_path, signum):
    process = start(tmp_path)
    read_until_epoch(process, 2)
    process.send_signal(signum)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signum, output
    assert "Traceback" not in output
    assert f"Continue with: python train_phase2.py --resume --out {tmp_path / 'PAI'}" in output
    out = tmp_path / "PAI"
    stopped = json.loads((out / "results.json").read_text())
    assert stopped["status"] == "interrupted" and len(stopped["history"]) >= 2
    assert (out / "PAI.png").exists() and (out / stopped["checkpoint"] / "latest.pt").exists()

    resumed = train_phase2.main(train_phase2.parse_args(["--resume", "--out", str(out)]))
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

    resumed = train_phase2.main(train_phase2.parse_args(["--resume", "--out", str(out)]))
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
        "settings": vars(train_phase2.parse_args(["--quick"])) | {"given": None}}))
    message = fails(["--resume", "--out", str(out), "--lr", "0.01"], capsys)
    assert "--lr 0.01 conflicts with the run's 0.001" in message


# ---------------------------------------------------------------- the library's failure modes

class BatchNormCNN(nn.Module):
    """A user's standard CNN: conv-BN-ReLU blocks and a BatchNorm1d head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(8 * 4 * 4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.features(x))


def test_batchnorm_cnn_converts_and_grows_dendrites_without_a_debugger(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = dendrites.Tracker("PAI", patience=1, max_dendrites=1)
    model = tracker.convert(BatchNormCNN())
    assert tracker.dendrite_modules() == [".features.0", ".features.3", ".head.0", ".head.3"]
    optimizer = tracker.new_optimizer(model)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    kinds = []
    for epoch in range(1, 5):  # a flat validation score makes the tracker switch
        model.train()
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        step = tracker.add_scores(model, epoch, 50.0, 50.0, 50.0)
        model = step.model
        if step.restructure:
            kinds.append(step.restructure.kind)
            if not step.complete:
                optimizer = tracker.new_optimizer(model)
        if step.complete:
            break
    assert kinds[0] == "dendrites added" and tracker.dendrite_sets() >= 1
    assert model.eval()(x).shape == (32, 10)


def test_library_debugger_path_becomes_an_error(tmp_path, monkeypatch):
    """With norm layers left untracked the library calls pdb.set_trace(); here it raises."""
    monkeypatch.chdir(tmp_path)
    tracker = dendrites.Tracker("PAI", patience=1, max_dendrites=1)
    dendrites._set("module_names_to_track", [])
    with pytest.raises(dendrites.LibraryError, match="debugger"):
        tracker.convert(BatchNormCNN())


def test_library_sys_exit_0_in_a_forward_pass_fails_the_run(tmp_path, monkeypatch, capsys):
    """The library's forward calls sys.exit(0) in one debugging mode: the run must fail."""
    configure = dendrites.configure

    def configure_with_exit(*args, **kwargs):
        configure(*args, **kwargs)
        dendrites._set("debugging_output_dimensions", 2)
    monkeypatch.setattr(dendrites, "configure", configure_with_exit)
    message = fails(["--quick", "--out", str(tmp_path / "PAI")], capsys)
    assert "sys.exit(0)" in message


def test_library_settings_reach_the_library(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the library writes into ./<save name>/
    tracker = dendrites.Tracker("PAI", 4, 2, improvement_threshold=[0.01, 0.0], candidate_init=0.1,
                                activation="tanh")
    tracker.convert(Net(1, 8, 10, 0.125))
    pc = dendrites.GPA.pc
    assert pc.get_improvement_threshold() == 0.01  # the entry for no dendrite set added yet
    assert pc.get_candidate_weight_initialization_multiplier() == 0.1
    assert pc.get_find_best_lr() is False  # no schedule: its learning-rate search cannot work
    assert pc.get_pai_forward_function() is torch.tanh
    dendrites.Tracker("PAI2", 4, 2).convert(Net(1, 8, 10, 0.125))  # the next run: the defaults again
    assert dendrites.GPA.pc.get_improvement_threshold() == 0.001
    assert dendrites.GPA.pc.get_pai_forward_function() is torch.sigmoid


def test_a_schedule_reaches_the_library_with_its_learning_rate_search_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = dendrites.Tracker("PAI", 4, 1, Recipe("adadelta", 1.0, "step"))
    model = tracker.convert(Net(1, 8, 10, 0.125))
    optimizer = tracker.new_optimizer(model)
    assert isinstance(optimizer, torch.optim.Adadelta) and optimizer.param_groups[0]["lr"] == 1.0
    assert isinstance(tracker.scheduler, torch.optim.lr_scheduler.StepLR)
    assert dendrites.GPA.pc.get_find_best_lr() is True  # the library's default, where a schedule allows


def test_misspelt_library_setting_raises():
    with pytest.raises(dendrites.LibraryError, match="no setting 'max_dendritez'"):
        dendrites._set("max_dendritez", 3)


# ---------------------------------------------------------------- reproducible, offline

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
