import pytest
import torch

from model import Net, count_parameters, layer_widths


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
