"""neuroshrink/augment.py: shifted and flipped batches keep their shape, move each image as a
whole, flip only where asked, and repeat for a seed."""
import pytest
import torch

from neuroshrink import augment
from neuroshrink.augment import Augment


def dots(n=64, size=12):
    """Images with one bright pixel each, away from the border, at a known place."""
    images = torch.zeros(n, 1, size, size)
    images[:, 0, 5, 4] = 1.0
    return images


def where(images):
    """(row, column) of each image's brightest pixel."""
    flat = images.flatten(1).argmax(1)
    size = images.shape[-1]
    return torch.stack([flat // size, flat % size], 1)


def test_a_shift_keeps_the_shape_and_moves_each_image_by_at_most_the_shift():
    images = dots()
    out = Augment(shift=2)(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    moved = where(out) - torch.tensor([5, 4])
    assert moved.abs().max() <= 2 and len({tuple(m) for m in moved.tolist()}) > 5  # shifts vary per image
    assert torch.equal(out.sum((1, 2, 3)), images.sum((1, 2, 3)))  # each image moved whole: nothing lost


def test_flips_only_where_asked():
    images = dots()
    never = Augment(shift=0)(images, torch.Generator().manual_seed(0))
    assert torch.equal(never, images)
    flipped = Augment(shift=0, flip=True)(images, torch.Generator().manual_seed(0))
    columns = where(flipped)[:, 1]
    assert set(columns.tolist()) == {4, 12 - 1 - 4} and 16 < (columns == 7).sum() < 48  # about half mirrored


def test_the_same_seed_gives_the_same_batch():
    images = torch.rand(32, 3, 10, 10)
    a, b, c = (Augment(2, flip=True)(images, torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("dataset, expected", [
    ("fashion-mnist", "shift-flip"), ("cifar10", "shift-flip"),
    ("digits", "shift"), ("mnist", "shift"), ("folder-mine", "shift"),  # a mirrored digit is not a digit
])
def test_auto_flips_only_data_whose_classes_survive_a_mirror(dataset, expected):
    assert augment.resolve("auto", dataset) == expected
    assert augment.resolve("none", dataset) == "none"
