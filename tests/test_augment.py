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


@pytest.mark.parametrize("channels", [1, 3])
def test_each_image_is_its_border_padded_copy_cropped_at_its_own_shift_in_channels_last_order(channels):
    images, s = torch.rand(16, channels, 9, 7), 2
    out = Augment(shift=s)(images, torch.Generator().manual_seed(3))
    dy, dx = torch.randint(0, 2 * s + 1, (2, 16), generator=torch.Generator().manual_seed(3))  # the same draws
    padded = torch.nn.functional.pad(images, (s, s, s, s), mode="replicate")
    expected = torch.stack([padded[i, :, y:y + 9, x:x + 7] for i, (y, x) in enumerate(zip(dy.tolist(), dx.tolist()))])
    assert torch.equal(out, expected)
    # channels-last with its canonical strides, one channel too: the library's dendrite layers
    # computed a grey batch of other strides differently (the same values, other runs)
    assert out.stride() == (9 * 7 * channels, 1, 7 * channels, channels)


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


def test_tta_averages_an_image_and_its_mirror_in_the_exported_file_too(tmp_path):
    """A --tta run evaluates, reports and ships the flip-averaged model: its model.onnx gives an
    image and its mirror image the same logits, and the accuracy the run reports is the file's."""
    import numpy as np

    from conftest import run
    from neuroshrink import export

    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--epochs", "2", "--augment", "shift-flip", "--tta")
    session = export.ort_session(tmp_path / "PAI" / "model.onnx")
    pixels = np.random.default_rng(0).integers(0, 17, (4, 1, 8, 8)).astype(np.uint8)  # digits' 0-16 values
    logits, mirrored = (session.run(None, {"pixels": x})[0] for x in (pixels, np.ascontiguousarray(pixels[..., ::-1])))
    np.testing.assert_allclose(logits, mirrored, rtol=1e-5, atol=1e-5)
    assert result["final"]["onnx"]["test_acc"] == result["final"]["test_acc"]


def test_tta_is_refused_where_training_did_not_flip():
    from neuroshrink.config import RunConfig
    from neuroshrink.errors import UsageError

    with pytest.raises(UsageError, match="--tta needs flips: --augment shift-flip"):
        RunConfig(tta=True).resolved()  # digits: a mirrored 3 is no digit
    assert RunConfig(tta=True, dataset="fashion-mnist", recipe="strong").resolved().augment == "shift-flip"
