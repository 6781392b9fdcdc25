"""Data augmentation of in-memory image batches, on their device, a whole batch at once.

Random translation by up to `shift` pixels (edges padded by repeating the border, which on
these data sets is background) and, where the data allow it, a horizontal flip of half the
images. The random numbers come from the training loop's CPU generator, so a seed gives the
same augmented batches on every device.
"""

import torch
from torch import nn

# Data sets whose classes survive a horizontal flip: a mirrored shirt is a shirt, a mirrored
# 3 or 7 is not a digit. Your own images: not assumed; ask for --augment shift-flip.
FLIPS_ALLOWED = {"fashion-mnist": True, "cifar10": True, "digits": False, "mnist": False}


def resolve(augment, dataset):
    """The augmentation "auto" means for this data set: shift-flip where flips are allowed."""
    if augment != "auto":
        return augment
    return "shift-flip" if FLIPS_ALLOWED.get(dataset, False) else "shift"


class Augment:
    """`Augment(shift, flip)(images, generator)`: a new batch, same shape, dtype and device."""

    def __init__(self, shift=2, flip=False):
        self.shift, self.flip = shift, flip

    @classmethod
    def named(cls, name, shift=2):
        """None for "none"; otherwise the augmentation train_phase2's --augment names."""
        return {"none": None, "shift": cls(shift), "shift-flip": cls(shift, flip=True)}[name]

    def __call__(self, images, generator):
        n, _, h, w = images.shape
        s = self.shift
        if s:
            padded = torch.nn.functional.pad(images, (s, s, s, s), mode="replicate")
            dy, dx = (torch.randint(0, 2 * s + 1, (2, n), generator=generator)).to(images.device)
            windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (n, c, 2s+1, 2s+1, h, w): every shift, a view
            # each image's own window (3x faster than indexing every pixel), laid out channels-last with
            # canonical strides even for one channel (the library's dendrite layers compute otherwise)
            images = windows[torch.arange(n, device=images.device), :, dy, dx].permute(0, 2, 3, 1)
            images = images.clone(memory_format=torch.contiguous_format).permute(0, 3, 1, 2)
        if self.flip:
            flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
            images = torch.where(flip[:, None, None, None], images.flip(3), images)
        return images  # (n, c, h, w) in channels-last memory order: what channels-last models take


class FlipAveraged(nn.Module):
    """Test-time augmentation: the mean of the model's logits on the images and on their
    mirror images. Its parameters are the model's; exported, it is one file that runs the model
    twice (twice the inference cost, which the run's timing records)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return (self.model(x) + self.model(x.flip(3))) / 2


def test_time(tta):
    """What the run evaluates and exports of a model: itself, or with tta its FlipAveraged."""
    return FlipAveraged if tta else (lambda model: model)
