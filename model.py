"""The CNN of the PyTorch MNIST example, with a width multiplier.

Plain PyTorch: this file knows nothing of perforatedai. train_phase2.py wraps it.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# Layer widths of pytorch/examples mnist/main.py; `width` scales all three.
BASE_CHANNELS = (32, 64)
BASE_HIDDEN = 128


def layer_widths(width):
    """(conv1 channels, conv2 channels, hidden units) for a width multiplier."""
    sizes = tuple(round(n * width) for n in (*BASE_CHANNELS, BASE_HIDDEN))
    if min(sizes) < 1:
        raise ValueError(
            f"width {width:g} leaves a layer with no units {sizes}; "
            f"use width >= {1 / BASE_CHANNELS[0]:g}"
        )
    return sizes


class Net(nn.Module):
    """conv3x3 -> conv3x3 -> maxpool -> dropout -> linear -> dropout -> linear.

    Works for any square image of side >= 6: 8x8 digits, 28x28 MNIST, 32x32 CIFAR.
    Returns logits of shape (N, num_classes).
    """

    def __init__(self, in_channels=1, image_size=28, num_classes=10, width=1.0):
        super().__init__()
        if image_size < 6:
            raise ValueError(f"image_size {image_size} is too small; the CNN needs >= 6")
        c1, c2, hidden = layer_widths(width)
        pooled = (image_size - 4) // 2  # two unpadded 3x3 convs, then a 2x2 max-pool
        self.conv1 = nn.Conv2d(in_channels, c1, 3)
        self.conv2 = nn.Conv2d(c1, c2, 3)
        self.dropout1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(c2 * pooled * pooled, hidden)
        self.dropout2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):             # (N, in_channels, S, S)
        x = F.relu(self.conv1(x))     # (N, c1, S-2, S-2)
        x = F.relu(self.conv2(x))     # (N, c2, S-4, S-4)
        x = F.max_pool2d(x, 2)        # (N, c2, P, P), P = (S-4)//2
        x = self.dropout1(x)
        x = torch.flatten(x, 1)       # (N, c2*P*P)
        x = F.relu(self.fc1(x))       # (N, hidden)
        x = self.dropout2(x)
        return self.fc2(x)            # (N, num_classes)


def count_parameters(model):
    """Trainable parameters of a plain (unconverted) model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
