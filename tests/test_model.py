"""model.py: the plain CNNs' shapes, exact parameter counts and width knob."""
import pytest
import torch
import torch.nn as nn

from conftest import DIGITS, within_budget
from model import MODELS, CompactCNN, Conv2Pool, Net, ResCNN, SlimCNN, count_parameters, layer_widths, width_for_params


@pytest.mark.parametrize("channels, size, width, params", [
    (1, 28, 1.0, 1_199_882),    # pytorch/examples mnist/main.py, the published count
    (1, 8, 0.125, 1_034),       # the default demo: 8x8 digits
    (3, 32, 1.0, 1_626_442),    # CIFAR-10
    (1, 28, 0.25, 75_338),
])
def test_output_shape_and_exact_parameter_count(channels, size, width, params):
    model = Net(channels, size, 10, width)
    assert model(torch.zeros(5, channels, size, size)).shape == (5, 10)
    assert count_parameters(model) == params


def test_width_scales_every_layer():
    assert layer_widths(1.0) == (32, 64, 128)
    assert layer_widths(0.25) == (8, 16, 32)


@pytest.mark.parametrize("width", [0.01, 0.015625, 0.0])
def test_width_that_leaves_a_layer_empty_is_refused(width):
    with pytest.raises(ValueError, match="no units.*use width >= 0.03125"):
        layer_widths(width)


def test_the_suggested_smallest_width_works():
    assert layer_widths(0.03125) == (1, 2, 4)


def test_image_too_small_is_refused():
    with pytest.raises(ValueError, match="too small"):
        Net(1, 5, 10)


@pytest.mark.parametrize("channels, size, width, params", [
    (1, 8, 0.125, 1_926),       # digits
    (1, 28, 1.0, 112_106),      # 28x28: global average pooling makes the count independent of size
    (1, 8, 1.0, 112_106),
    (3, 32, 1.0, 112_682),      # CIFAR-10: only the stem sees the 3 channels
])
def test_rescnn_output_shape_and_exact_parameter_count(channels, size, width, params):
    model = ResCNN(channels, size, 10, width)
    assert model(torch.zeros(5, channels, size, size)).shape == (5, 10)
    assert count_parameters(model) == params
    assert model.widths == (round(32 * width), round(64 * width))


def test_rescnn_is_residual_with_batchnorm_and_a_strided_conv():
    model = ResCNN(1, 8, 10, 0.25)
    kinds = {type(m) for m in model.modules()}
    assert {nn.BatchNorm2d, nn.Conv2d, nn.Linear} <= kinds
    assert model.down[0].stride == (2, 2)
    block = model.block1.eval()
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        y = block.body2(torch.relu(block.body1(x)))
        assert torch.equal(block(x), torch.relu(x + y))  # the skip connection


def test_built_in_models_by_name():
    assert MODELS == {"net": Net, "rescnn": ResCNN, "conv2pool": Conv2Pool, "slim": SlimCNN, "compact": CompactCNN}


@pytest.mark.parametrize("name, budget", [("net", 300), ("net", 3658), ("net", 50000), ("rescnn", 300),
                                          ("rescnn", 5000)])
def test_params_gives_the_width_of_the_budget(name, budget):
    width = width_for_params(MODELS[name], budget, **DIGITS)
    assert within_budget(count_parameters(MODELS[name](width=width, **DIGITS)), budget)


@pytest.mark.parametrize("name, channels, size, width, params", [
    ("conv2pool", 1, 28, 1.0, 83_466),   # the benchmark table's ~83.5k-parameter 2-conv CNN
    ("conv2pool", 1, 8, 0.25, 4_074),
    ("slim", 1, 28, 1.0, 241_898),       # global average pooling: the count does not depend on the size
    ("slim", 1, 8, 1.0, 241_898),
    ("slim", 1, 28, 0.5, 61_050),
    ("slim", 3, 32, 0.125, 4_110),       # only the stem sees the 3 channels
    ("compact", 1, 28, 1.0, 303_338),    # the head sees 7x7 positions of 128 channels
    ("compact", 1, 8, 1.0, 261_098),     # 8x8: no stride, 4x4 positions
    ("compact", 1, 28, 0.5, 91_770),
    ("compact", 3, 32, 0.25, 35_858),    # 32x32: 8x8 positions
])
def test_new_families_output_shape_and_exact_parameter_count(name, channels, size, width, params):
    model = MODELS[name](channels, size, 10, width)
    assert model(torch.zeros(5, channels, size, size)).shape == (5, 10)
    assert count_parameters(model) == params


def test_slim_downsamples_early_on_large_images_only():
    assert SlimCNN(1, 28, 10, 0.25).stem[0].stride == (2, 2)
    assert SlimCNN(1, 8, 10, 0.25).stem[0].stride == (1, 1)  # 8x8 digits keep their resolution
