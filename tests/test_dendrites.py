"""neuroshrink/dendrites.py: the library's tracker, its settings and its failure modes, for real."""
import pytest
import torch
import torch.nn as nn

from conftest import DIGITS, fails, run
from model import MODELS, Net
from neuroshrink import dendrites, placement
from neuroshrink.recipes import Recipe


@pytest.mark.parametrize("fixture, model", [("quick_run", Net), ("rescnn_run", MODELS["rescnn"])])
def test_one_dendrite_set_count_is_the_librarys(fixture, model, request):
    """shrink.py sizes a dendritic model by its count with one set, before training it."""
    result = request.getfixturevalue(fixture)["result"]
    added = next(r for r in result["restructures"] if r["kind"] == "dendrites added")
    assert added["dendrite_sets"] == 1
    assert added["params_after"] == placement.count_with_sets(model(width=0.125, **DIGITS), 1)


def test_rescnn_converts_and_grows_dendrites(rescnn_run):
    result = rescnn_run["result"]
    assert result["settings"]["model"] == "rescnn" and result["settings"]["plain_params"] == 1_926
    modules = result["phase1"]["dendrite_modules"]
    assert sorted(modules) == [".block1.body1.0", ".block1.body2.0", ".block2.body1.0", ".block2.body2.0",
                               ".down.0", ".head", ".stem.0"]  # every conv and the head; BatchNorm only tracked
    kinds = [e["kind"] for e in result["restructures"]]
    assert kinds[0] == "dendrites added" and kinds[-1] == "training complete"
    assert result["final"]["dendrite_sets"] >= 1 and result["final"]["params"] > 1_926


def test_capacity_test_adds_three_sets_one_per_epoch(tmp_path):
    result, _ = run(tmp_path, "--quick", "--capacity-test")
    kinds = [e["kind"] for e in result["restructures"]]
    assert kinds == ["dendrites added"] * 3 + ["training complete"]
    assert [e["epoch"] for e in result["restructures"]] == [1, 2, 3, 4]
    assert result["final"]["dendrite_sets"] == 3
    assert (tmp_path / "PAI" / "PAI.png").exists()


class BatchNormCNN(nn.Module):
    """A user's standard CNN: conv-BN-ReLU blocks and a BatchNorm1d head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(8 * 4 * 4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.features(x))


def test_batchnorm_cnn_converts_and_grows_dendrites_without_a_debugger(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tracker = dendrites.PerforatedTracker("PAI", patience=1, max_dendrites=1)
    model = tracker.convert(BatchNormCNN())
    assert tracker.dendrite_modules() == [".features.0", ".features.3", ".head.0", ".head.3"]
    # the library's list of what it leaves unwrapped (a line a parameter tensor, and its advice): one line
    said = capsys.readouterr().out
    assert ("perforatedai: no dendrites on 3 modules it does not wrap (6 parameter tensors): .features.1, "
            ".features.4, .head.1\n") in said and dendrites.UNWRAPPED not in said and "main_module" not in said
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
    tracker = dendrites.PerforatedTracker("PAI", patience=1, max_dendrites=1)
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
    tracker = dendrites.PerforatedTracker("PAI", 4, 2, improvement_threshold=[0.01, 0.0], candidate_init=0.1,
                                activation="tanh")
    tracker.convert(Net(1, 8, 10, 0.125))
    pc = dendrites.GPA.pc
    assert pc.get_improvement_threshold() == 0.01  # the entry for no dendrite set added yet
    assert pc.get_candidate_weight_initialization_multiplier() == 0.1
    assert pc.get_find_best_lr() is False  # no schedule: its learning-rate search cannot work
    assert pc.get_pai_forward_function() is torch.tanh
    dendrites.PerforatedTracker("PAI2", 4, 2).convert(Net(1, 8, 10, 0.125))  # the next run: the defaults again
    assert dendrites.GPA.pc.get_improvement_threshold() == 0.001
    assert dendrites.GPA.pc.get_pai_forward_function() is torch.sigmoid


def test_a_schedule_reaches_the_library_with_its_learning_rate_search_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = dendrites.PerforatedTracker("PAI", 4, 1, Recipe("adadelta", 1.0, "step"))
    model = tracker.convert(Net(1, 8, 10, 0.125))
    optimizer = tracker.new_optimizer(model)
    assert isinstance(optimizer, torch.optim.Adadelta) and optimizer.param_groups[0]["lr"] == 1.0
    assert isinstance(tracker.scheduler, torch.optim.lr_scheduler.StepLR)
    assert dendrites.GPA.pc.get_find_best_lr() is True  # the library's default, where a schedule allows


def test_misspelt_library_setting_raises():
    with pytest.raises(dendrites.LibraryError, match="no setting 'max_dendritez'"):
        dendrites._set("max_dendritez", 3)


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


def test_the_slim_family_converts_and_grows_dendrites(tmp_path):
    """Its BatchNorm layers tracked, every conv and the head given dendrites."""
    result, _ = run(tmp_path, "--quick", "--graph-at-end", "--model", "slim", "--width", "0.125")
    assert sorted(result["phase1"]["dendrite_modules"]) == [".conv2.0", ".conv3.0", ".conv4.0", ".head", ".stem.0"]
    assert result["restructures"][0]["kind"] == "dendrites added" and result["final"]["dendrite_sets"] >= 1
