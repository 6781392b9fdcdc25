"""Plain PyTorch CNNs with a width multiplier.

This file knows nothing of perforatedai: train_phase2.py wraps whatever model it is given.
Every model here (and any model passed with --model package.module:factory) is built as
`factory(in_channels, image_size, num_classes, width)` and returns logits (N, num_classes).

- Net: the CNN of the PyTorch MNIST example (pytorch/examples mnist/main.py).
- ResCNN: a small BatchNorm residual CNN, the kind of model people train today.
- Conv2Pool: the 2-conv CNN of Zalando's Fashion-MNIST benchmark table (92.47 % at ~83k
  parameters in the notebook it links): conv5x5 -> pool -> conv5x5 -> pool -> linear.
- SlimCNN: conv-BN-ReLU stages that downsample early and end in global average pooling, so
  the parameters sit in the convolutions and few layers run at full resolution.
- CompactCNN: the same early-downsampling conv-BN-ReLU stages, ending in a linear layer over
  the last feature map's positions (as the Zalando anchor's head does): the family the strong
  recipe trains (docs/recipe.md says why).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# Layer widths of pytorch/examples mnist/main.py; `width` scales all three.
BASE_CHANNELS = (32, 64)
BASE_HIDDEN = 128


def scaled(sizes, width):
    """Layer sizes multiplied by `width`; ValueError if a layer would be left empty."""
    out = tuple(round(n * width) for n in sizes)
    if min(out) < 1:
        raise ValueError(f"width {width:g} leaves a layer with no units {out}; "
                         f"use width >= {1 / min(sizes):g}")
    return out


def layer_widths(width):
    """Net's (conv1 channels, conv2 channels, hidden units) for a width multiplier."""
    return scaled((*BASE_CHANNELS, BASE_HIDDEN), width)


class Net(nn.Module):
    """conv3x3 -> conv3x3 -> maxpool -> dropout -> linear -> dropout -> linear.

    Works for any square image of side >= 6: 8x8 digits, 28x28 MNIST, 32x32 CIFAR.
    """

    def __init__(self, in_channels=1, image_size=28, num_classes=10, width=1.0):
        super().__init__()
        if image_size < 6:
            raise ValueError(f"image_size {image_size} is too small; the CNN needs >= 6")
        self.widths = c1, c2, hidden = layer_widths(width)
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


def conv_bn(c_in, c_out, stride=1):
    """3x3 conv (no bias: the BatchNorm after it has one) and BatchNorm."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False), nn.BatchNorm2d(c_out))


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input, then ReLU (ResNet's basic block)."""

    def __init__(self, channels):
        super().__init__()
        self.body1 = conv_bn(channels, channels)
        self.body2 = conv_bn(channels, channels)

    def forward(self, x):                            # (N, C, H, W)
        y = self.body2(F.relu(self.body1(x)))        # (N, C, H, W)
        return F.relu(x + y)


class ResCNN(nn.Module):
    """stem conv-BN-ReLU -> residual block -> strided conv-BN-ReLU -> residual block
    -> global average pool -> linear. Works for any square image of side >= 2."""

    def __init__(self, in_channels=1, image_size=28, num_classes=10, width=1.0):
        super().__init__()
        if image_size < 2:
            raise ValueError(f"image_size {image_size} is too small; the CNN needs >= 2")
        self.widths = c1, c2 = scaled(BASE_CHANNELS, width)
        self.stem = conv_bn(in_channels, c1)
        self.block1 = ResidualBlock(c1)
        self.down = conv_bn(c1, c2, stride=2)
        self.block2 = ResidualBlock(c2)
        self.head = nn.Linear(c2, num_classes)

    def forward(self, x):                  # (N, in_channels, S, S)
        x = F.relu(self.stem(x))           # (N, c1, S, S)
        x = self.block1(x)                 # (N, c1, S, S)
        x = F.relu(self.down(x))           # (N, c2, ceil(S/2), ceil(S/2))
        x = self.block2(x)                 # (N, c2, ceil(S/2), ceil(S/2))
        x = x.mean(dim=(2, 3))             # (N, c2): global average pool
        return self.head(x)                # (N, num_classes)


class Conv2Pool(nn.Module):
    """conv5x5 -> ReLU -> maxpool -> conv5x5 -> ReLU -> maxpool -> linear, "same" padding
    (hardmaru's pytorch_notebooks, listed in Zalando's Fashion-MNIST benchmark table).
    Works for any square image of side >= 4."""

    def __init__(self, in_channels=1, image_size=28, num_classes=10, width=1.0):
        super().__init__()
        if image_size < 4:
            raise ValueError(f"image_size {image_size} is too small; the CNN needs >= 4")
        self.widths = c1, c2 = scaled(BASE_CHANNELS, width)
        pooled = image_size // 4
        self.conv1 = nn.Conv2d(in_channels, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.fc = nn.Linear(c2 * pooled * pooled, num_classes)

    def forward(self, x):                                 # (N, in_channels, S, S)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)        # (N, c1, S/2, S/2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)        # (N, c2, S/4, S/4)
        return self.fc(torch.flatten(x, 1))               # (N, num_classes)


SLIM_CHANNELS = (32, 64, 128)


class SlimCNN(nn.Module):
    """stem conv-BN-ReLU (stride 2 on images of side >= 16) -> conv-BN-ReLU -> maxpool ->
    2 x conv-BN-ReLU -> global average pool -> linear. Downsampling early keeps the
    convolutions cheap on a CPU; the pooled head spends no parameters on positions."""

    def __init__(self, in_channels=1, image_size=28, num_classes=10, width=1.0):
        super().__init__()
        if image_size < 2:
            raise ValueError(f"image_size {image_size} is too small; the CNN needs >= 2")
        self.widths = c1, c2, c3 = scaled(SLIM_CHANNELS, width)
        stride = 2 if image_size >= 16 else 1
        side = ((image_size - 1) // stride + 1) // 2  # after the stem and the pool
        self.stem = conv_bn(in_channels, c1, stride)
        self.conv2 = conv_bn(c1, c2)
        self.conv3 = conv_bn(c2, c3)
        self.conv4 = conv_bn(c3, c3)
        self.head = nn.Linear(self.head_inputs(c3, side), num_classes)

    def head_inputs(self, channels, side):
        return channels

    def readout(self, x):                      # (N, c3, 7, 7) -> (N, c3)
        return x.mean(dim=(2, 3))              # global average pool

    def forward(self, x):                      # (N, in_channels, S, S); 28x28 shown
        x = F.relu(self.stem(x))               # (N, c1, 14, 14)  (8x8: stride 1, 8x8)
        x = F.relu(self.conv2(x))              # (N, c2, 14, 14)
        x = F.max_pool2d(x, 2)                 # (N, c2, 7, 7)
        x = F.relu(self.conv3(x))              # (N, c3, 7, 7)
        x = F.relu(self.conv4(x))              # (N, c3, 7, 7)
        return self.head(self.readout(x))      # (N, num_classes)


class CompactCNN(SlimCNN):
    """SlimCNN's stages, then a linear layer over the last feature map's positions instead of
    the pooling. The stride and the pool put three of the four convolutions at 14x14 or 7x7
    (cheap on a CPU); the position-wise head learns fast."""

    def head_inputs(self, channels, side):
        return channels * side * side

    def readout(self, x):                      # (N, c3, 7, 7) -> (N, c3 * 49)
        return torch.flatten(x, 1)


MODELS = {"net": Net, "rescnn": ResCNN, "conv2pool": Conv2Pool, "slim": SlimCNN, "compact": CompactCNN}  # --model names


def count_parameters(model):
    """Trainable parameters of a plain (unconverted) model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def width_for_params(factory, budget, count=count_parameters, step=1 / 256, tolerance=0.1, bisect=False, memo=None,
                     **shape):
    """The width (a multiple of `step`) whose model has the `count` nearest `budget`;
    ValueError if even that is more than `tolerance` away. Counts grow with the width, so the
    search stops once it has passed the budget; `bisect` halves the range of widths (up to 1)
    instead of walking it from the narrowest, for models slow to build (a pruned one). `memo`
    (k -> count) keeps the counts for the next search of the same models."""
    memo = {} if memo is None else memo

    def size(k):
        if k not in memo:
            try:
                memo[k] = count(factory(width=k * step, **shape))
            except ValueError:  # too narrow: a layer would have no units
                memo[k] = None
        return memo[k]

    if bisect:  # the first k whose count passes the budget, and the one before it
        low, high = 0, round(1 / step)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if (size(middle) or 0) <= budget else (low, middle)
        sizes = {k: size(k) for k in (low, high) if k > 0}
    else:
        sizes, k = {}, 1
        while (sizes.setdefault(k, size(k)) or 0) <= budget:
            k += 1
    found = [(abs(n - budget), k, n) for k, n in sizes.items() if n is not None]
    if not found:
        raise ValueError("no width builds the model")
    distance, k, n = min(found)
    if distance > tolerance * budget:
        smallest = n > budget and k == min(sizes)
        raise ValueError(f"the nearest width, {k * step:g}, gives {n:,} parameters, more than {tolerance:.0%} from "
                         f"{budget:,}" + (f"; {largest_layer(factory(width=k * step, **shape))}" if smallest else ""))
    return k * step


def largest_layer(model):
    """Where a model too large for a budget at its narrowest keeps its parameters, as a phrase."""
    name, module = max(((name, m) for name, m in model.named_modules() if not list(m.children())),
                       key=lambda item: count_parameters(item[1]))
    return f"{name} ({type(module).__name__}) alone keeps {count_parameters(module):,}"
