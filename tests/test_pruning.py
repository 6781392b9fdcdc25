"""neuroshrink/pruning.py and --prune-from: a trained wide CNN pruned to a budget."""
import pytest
import torch

import train_phase2
from conftest import run, within_budget
from model import Net, count_parameters
from neuroshrink import data, build, pruning
from neuroshrink.errors import UsageError
from neuroshrink.training import evaluate

DIGITS = dict(in_channels=1, image_size=8, num_classes=10)


@pytest.mark.parametrize("budget", [300, 5000])
def test_pruning_reaches_the_budget_and_keeps_the_classes(budget):
    torch.manual_seed(0)
    model = Net(width=0.5, **DIGITS)  # 13,706 parameters
    pruned = pruning.prune_to(model, budget, torch.zeros(2, 1, 8, 8))
    assert within_budget(count_parameters(pruned), budget)
    assert pruning.classifier(pruned).out_features == 10
    assert pruned(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_pruning_on_to_a_smaller_budget_gives_the_model_a_pruning_from_the_start_gives():
    def net():
        torch.manual_seed(0)
        return Net(width=0.5, **DIGITS)  # 13,706 parameters
    inputs, going_on = torch.zeros(2, 1, 8, 8), pruning.Pruning(net(), torch.zeros(2, 1, 8, 8), "lamp")
    for budget in (5000, 3658, 1000):
        state, fresh = going_on.to(budget).state_dict(), pruning.prune_to(net(), budget, inputs, "lamp").state_dict()
        assert within_budget(count_parameters(going_on.to(budget)), budget)
        assert state.keys() == fresh.keys() and all(torch.equal(state[k], fresh[k]) for k in state)
    assert going_on.reaches(1000) and not going_on.reaches(5000)  # the last reached, or one it has pruned past
    with pytest.raises(ValueError, match="not more than the budget"):
        going_on.to(5000)


def test_lamp_chooses_the_same_shape_whatever_one_layers_scale():
    """Weight decay shrinks some layers' weights more than others' (and BatchNorm undoes a
    convolution's scale): the shape global pruning chooses must not follow a layer's scale.
    LAMP's does not; magnitude pruning's does."""
    def shape(importance, scale):
        torch.manual_seed(0)
        model = Net(width=0.5, **DIGITS)  # 13,706 parameters, pruned to 3,658
        with torch.no_grad():
            model.fc1.weight.mul_(scale)
        pruned = pruning.prune_to(model, 3658, torch.zeros(2, 1, 8, 8), importance)
        return pruned.conv1.out_channels, pruned.conv2.out_channels, pruned.fc1.out_features
    assert shape("lamp", 1.0) == shape("lamp", 0.05)
    assert shape("magnitude", 1.0) != shape("magnitude", 0.05)


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """A finished plain --quick run at width 0.5 (13,706 parameters): what gets pruned."""
    return run(tmp_path_factory.mktemp("wide"), "--quick", "--no-dendrites", "--width", "0.5", out="wide")[0]


def test_a_pruned_run_starts_from_the_trained_model_and_exports_its_accuracy(wide_run, tmp_path):
    source = wide_run["out"]
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--prune-from", source, "--params", "1000")
    assert result["status"] == "complete" and within_budget(result["final"]["params"], 1000)
    # Pruned, not rebuilt: before its first fine-tuning epoch it already classifies far above chance.
    quick = train_phase2.QUICK
    splits = data.subset(data.load("digits"), quick["n_train"], quick["n_eval"])
    model = build.pruned_from_run(source, 1000, splits, "digits", quick=True)
    assert evaluate(model, *splits.val, splits.normalise) > 30
    # pruned once a process: a second run gets its own copy of the same model, untouched by the first's training
    again = build.pruned_from_run(source, 1000, splits, "digits", quick=True)
    assert again is not model and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                                        again.state_dict().values()))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not torch.equal(next(model.parameters()), next(build.pruned_from_run(source, 1000, splits, "digits",
                                                                                 quick=True).parameters()))
    # a larger budget after it: pruned from the start again, not from the 1,000-parameter model
    assert within_budget(count_parameters(build.pruned_from_run(source, 3658, splits, "digits", quick=True)), 3658)
    evaluated = train_phase2.evaluate_saved(str(tmp_path / "PAI"))
    assert evaluated["test_acc"] == result["final"]["test_acc"]
    inference = result["final"]["inference_ms"]
    assert set(inference) == {"1", "256"} and 0 < inference["1"] < inference["256"]


def test_prune_from_refuses_a_dendritic_run(quick_run, tmp_path):
    with pytest.raises(UsageError, match="not a finished plain run"):
        run(tmp_path, "--quick", "--no-dendrites", "--prune-from", str(quick_run["out"]), "--params", "300")
