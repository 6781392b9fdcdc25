"""neuroshrink/build.py: a built-in CNN or the user's own factory, checked on a batch; the training step compiled."""
import json
import sys
from types import SimpleNamespace

import pytest
import torch

import train_phase2
from conftest import fails, files
from neuroshrink import build


def test_dropout_flag_sets_every_dropout_layer():
    digits = SimpleNamespace(in_channels=1, image_size=8, num_classes=10)
    model = build.build("net", digits, 0.125, dropout=0.3)
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3]
    default = build.build("net", digits, 0.125)
    assert [m.p for m in default.modules() if isinstance(m, torch.nn.Dropout)] == [0.25, 0.5]


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
    ("resnet50", "--model resnet50: unknown model; choose from net, rescnn, conv2pool, slim, compact, "
                 "torchvision:resnet50 (torchvision's), or give package.module:factory"),
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


def test_a_compiled_plain_run_trains_the_models_own_parameters(tmp_path, monkeypatch):
    """compile=True: the training forward is torch.compile's, whose parameters are the model's,
    so the best epoch's weights, the checkpoint and the export are the trained ones."""
    from neuroshrink.config import RunConfig

    compiled = []

    def compile_and_note(model):  # dynamo captures the model as the run's would; AOT autograd
        compiled.append(model)     # without Inductor's C++ (15 s of compiling in a fresh clone)
        return torch_compile(model, backend="aot_eager")
    torch_compile = torch.compile
    monkeypatch.setattr(build.torch, "compile", compile_and_note)
    config = RunConfig(quick=True, no_dendrites=True, recipe="strong", epochs=3, compile=True)
    record = train_phase2.run(config, tmp_path / "run")
    assert len(compiled) == 1  # the training step went through torch.compile
    assert record["settings"]["compile"] and record["status"] == "complete"
    # learned (chance is 10 %; eagerly, 42 % after these 3 epochs; compiled dropout draws other masks)
    assert record["final"]["test_acc"] > 25
    assert record["final"]["val_acc"] == record["history"][record["final"]["best_epoch"] - 1]["val_acc"]
    assert record["final"]["onnx"]["test_acc"] == pytest.approx(record["final"]["test_acc"])


def test_without_a_cpp_compiler_a_run_says_so_and_trains_eagerly(monkeypatch, capsys):
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    model = torch.nn.Linear(2, 2)
    assert build.compiled(model, torch.device("cpu")) is model
    assert capsys.readouterr().out == "compile: no C++ compiler found (g++, clang++ or $CXX); training eagerly\n"
