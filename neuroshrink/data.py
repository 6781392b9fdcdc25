"""Datasets as in-memory uint8 pixels with fixed train / validation / test splits, normalised a
batch at a time (a quarter of the memory float32 images would take).

- digits: scikit-learn's bundled 8x8 handwritten digits (1,797 images; no network, the default).
- mnist, fashion-mnist: the four IDX files, gzipped or not, in --data-dir itself or in
  torchvision's layout under it (<data-dir>/FashionMNIST/raw); without --data-dir also in
  Debian's `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist).
- cifar10: torchvision's CIFAR10 class, reading <data-dir>/cifar-10-batches-py.
Only when no local copy exists does torchvision try to download into the data folder.
- folder:PATH, npz:PATH: your own images (user_data.py).

Validation is carved from the training data with a fixed seed (SPLIT_SEED), so every
run, whatever its training seed, sees the same three splits. The test split is the
dataset's own test set where it has one, untouched.
"""

import contextlib
import functools
import gzip
import math
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import user_data
from .images import Reading
from .errors import DataError

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
CHOICES = (*DATASETS, "folder:PATH", "npz:PATH")
DEFAULT_DATA_DIR = Path("data")
SPLIT_SEED = 0          # fixed: the splits never depend on the training seed
VAL_FRACTION = 0.1      # of the training data (digits: of the whole set, and as much again for test)
# Pixel values in a batch that is only evaluated: 1,024 Fashion-MNIST images (faster than 4,096 on a
# 2-core CPU: their activations stay in cache); fewer of larger images (1,024 colour images of
# 128 x 128 took gigabytes of activations at once).
EVAL_BATCH_VALUES = 1024 * 28 * 28

# Where Debian's packages put the IDX files (apt-get install dataset-fashion-mnist).
SYSTEM_IDX_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TORCHVISION_CLASS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
# The built-in sets' class names, in label order (torchvision's for the three it knows).
CLASS_NAMES = {"digits": [str(i) for i in range(10)], "mnist": [str(i) for i in range(10)],
               "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                 "Sneaker", "Bag", "Ankle boot"],
               "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}


@dataclass
class Splits:
    name: str
    train: tuple  # (images uint8 (N, C, S, S), the raw pixel values; labels int64 (N,))
    val: tuple
    test: tuple
    num_classes: int
    classes: list | None = None  # class names, where the source has them (your own images)
    # The training split's per-channel statistics, {"mean": [...], "std": [...]} over raw pixel
    # values: what normalise() applies to a batch, and a deployed model to the pixels it is given.
    normalisation: dict | None = None

    @property
    def in_channels(self):
        return self.train[0].shape[1]

    @property
    def image_size(self):
        return self.train[0].shape[-1]

    def to(self, device):
        """The same splits with every tensor on `device`."""
        return replace(self, **{part: tuple(t.to(device) for t in getattr(self, part))
                                for part in ("train", "val", "test")})

    def class_names(self):
        """The classes' names in label order: the source's, the built-in set's, else the labels."""
        return self.classes or CLASS_NAMES.get(self.name) or [str(i) for i in range(self.num_classes)]

    def normalise(self, pixels):
        """A batch of pixels as the network takes it: float32, (x - mean) / std per channel."""
        return normalise(pixels, self.normalisation)

    def sizes(self):
        return {part: len(getattr(self, part)[1]) for part in ("train", "val", "test")}

    def megabytes(self):
        """What its images and labels take in memory."""
        return sum(t.nelement() * t.element_size() for part in (self.train, self.val, self.test) for t in part) / 1e6


def split_indices(labels, val_fraction, test_fraction=0.0, seed=SPLIT_SEED):
    """Stratified, seeded (train, val, test) index arrays that partition range(len(labels))."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    rest, test = (index, index[:0])
    if test_fraction:
        rest, test = train_test_split(index, test_size=test_fraction, stratify=labels,
                                      random_state=seed)
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction),
                                  stratify=labels[rest], random_state=seed)
    return train, val, test


@functools.cache
def _digits_arrays():
    """scikit-learn's digits and their split indices, read and split once per process (a
    sweep or the test suite loads them for every run)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target, split_indices(bunch.target, VAL_FRACTION * 2, VAL_FRACTION * 2)


def _digits():
    raw, target, (train, val, test) = _digits_arrays()
    images = torch.tensor(raw, dtype=torch.uint8).unsqueeze(1)  # (1797, 1, 8, 8): values 0-16, a fresh copy
    labels = torch.tensor(target, dtype=torch.int64)
    return (images[train], labels[train]), (images[val], labels[val]), (images[test], labels[test])


def read_idx(path):
    """An IDX file (the MNIST format), gzipped or raw, as a uint8 array.

    torchvision's reader takes only uncompressed files; Debian ships them gzipped.
    """
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[:3] != b"\0\0\x08" or not 1 <= raw[3] <= 3:
        raise DataError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim].ljust(4 * ndim, b"\0"))
    body = np.frombuffer(raw, np.uint8, offset=min(len(raw), 4 + 4 * ndim))
    if body.size != math.prod(shape):
        raise DataError(f"{path} is truncated or corrupt: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def _idx_folder(name, data_dir, search_system):
    """First folder holding all four IDX files, each gzipped or raw; None if none does."""
    tv_layout = data_dir / TORCHVISION_CLASS[name] / "raw"
    candidates = [data_dir, tv_layout] + ([SYSTEM_IDX_DIRS[name]] if search_system and name in SYSTEM_IDX_DIRS else [])
    for folder in candidates:
        if all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in IDX_FILES):
            return folder
    return None


def _download(name, data_dir):
    """torchvision's own download into data_dir; a clear error without a network."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, TORCHVISION_CLASS[name])
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        return [cls(str(data_dir), train=train, download=True) for train in (True, False)]
    except Exception as e:
        hint = "apt-get install dataset-fashion-mnist, or " if name in SYSTEM_IDX_DIRS else ""
        last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise DataError(f"{name} is not in {data_dir} and could not be downloaded ({last}); "
                        f"{hint}put the files in {data_dir}") from None


def _mnist_like(name, data_dir, search_system):
    folder = _idx_folder(name, data_dir, search_system)
    if folder is None:
        _download(name, data_dir)
        folder = data_dir / TORCHVISION_CLASS[name] / "raw"

    def read(f):
        path = folder / f
        return read_idx(path if path.exists() else folder / f"{f}.gz")

    images, labels = ([read(f) for f in IDX_FILES[i::2]] for i in (0, 1))
    for x, y in zip(images, labels):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{name} in {folder}: images {x.shape} do not match labels {y.shape}")
    x_train, x_test = (torch.from_numpy(x.copy()).unsqueeze(1) for x in images)  # uint8 (N, 1, 28, 28)
    y_train, y_test = (torch.from_numpy(y.astype(np.int64)) for y in labels)
    train, val, _ = split_indices(labels[0], VAL_FRACTION)
    return (x_train[train], y_train[train]), (x_train[val], y_train[val]), (x_test, y_test)


def _cifar10(data_dir):
    import torchvision.datasets

    try:  # torchvision checks the files' checksums and reports missing or damaged ones
        parts = [torchvision.datasets.CIFAR10(str(data_dir), train=t) for t in (True, False)]
    except RuntimeError:
        parts = _download("cifar10", data_dir)
    (x_train, y_train), test = ((torch.from_numpy(p.data).permute(0, 3, 1, 2).contiguous(),  # uint8 (N, 3, 32, 32)
                                 torch.tensor(p.targets)) for p in parts)
    train, val, _ = split_indices(y_train.numpy(), VAL_FRACTION)
    return (x_train[train], y_train[train]), (x_train[val], y_train[val]), test


def source(text):
    """An argparse type for --dataset: a built-in name, folder:PATH or npz:PATH."""
    import argparse

    if text in DATASETS or user_data.is_user_source(text):
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(CHOICES)})")


def label(name):
    """The dataset's name as a results folder or study name can hold it (folder:PATH -> folder-<name>)."""
    return user_data.label(name)


def load(name, data_dir=None, image_size=None, reading=None):
    """Load a dataset as Splits of uint8 pixels with the training split's per-channel statistics.

    data_dir None means DEFAULT_DATA_DIR (created for a download) and, for Fashion-MNIST,
    Debian's package folder; a given data_dir must exist and is the only place looked at.
    For your own images (folder:, npz:) the data folder holds the cache, image_size resizes
    them, and `reading` (images.Reading) says how their files are read.
    """
    user = user_data.is_user_source(name)
    if not (name in DATASETS or user):
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(CHOICES)}")
    if image_size is not None and not user:
        raise DataError(f"--image-size is for your own images (folder:PATH, npz:PATH); {name}'s size is fixed")
    search_system = data_dir is None  # an explicit --data-dir is the only place looked at
    if data_dir is None:
        data_dir = DEFAULT_DATA_DIR
    elif not Path(data_dir).is_dir():
        raise DataError(f"data folder {data_dir} does not exist")
    data_dir = Path(data_dir).resolve()
    if not user:
        return copied(_built_in(name, data_dir, search_system, _stamp(name, data_dir, search_system)))
    reading = reading or Reading()
    held_as = _held_key(name, data_dir, image_size, reading)
    if held_as in _HELD:
        return copied(_HELD[held_as])
    return with_statistics(name, *user_data.load(name, image_size, data_dir, split_indices, reading))


def copied(splits):
    """The splits with tensors of their own: a run may not change what the next one reads."""
    return replace(splits, **{part: tuple(t.clone() for t in getattr(splits, part))
                              for part in ("train", "val", "test")})


_HELD = {}  # your images as a study holds them (_held_key): their splits


def _held_key(name, data_dir, image_size, reading):
    kind, _, path = name.partition(":")
    return kind, Path(path).expanduser().resolve(), Path(data_dir or DEFAULT_DATA_DIR).resolve(), image_size, reading


@contextlib.contextmanager
def held(splits, name, data_dir=None, image_size=None, reading=None):
    """Your images, read once (`splits`, as load() gave them), held for a block: a study's worker.
    Within it, load() of the same source returns a copy of them without checking thousands of
    files again for every run (4,000 images: 0.08 s a run). A built-in data set is kept for the
    process anyway."""
    if splits is None or not user_data.is_user_source(name):
        yield
        return
    key = _held_key(name, data_dir, image_size, reading or Reading())
    _HELD[key] = splits
    try:
        yield
    finally:
        del _HELD[key]


@functools.lru_cache(maxsize=1)
def _built_in(name, data_dir, search_system, stamp):
    """A built-in data set read, split and measured once per process for the same files
    (`stamp`): a sweep's worker trains every run on it (Fashion-MNIST: 1.5 s a run here). The
    caller gets a copy of its tensors."""
    if name == "digits":
        train, val, test = _digits()
    elif name == "cifar10":
        train, val, test = _cifar10(data_dir)
    else:
        train, val, test = _mnist_like(name, data_dir, search_system)
    return with_statistics(name, train, val, test, None)


def _stamp(name, data_dir, search_system):
    """The source files of a built-in data set as they are now (names, sizes, times); None where
    they are not there yet (a download) or are a package's (digits)."""
    if name == "digits":
        return None
    if name == "cifar10":
        files = sorted((data_dir / "cifar-10-batches-py").glob("*"))
    else:
        folder = _idx_folder(name, data_dir, search_system)
        files = [path for f in IDX_FILES for path in (folder / f, folder / f"{f}.gz") if path.exists()] if folder else []
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files) or None


def with_statistics(name, train, val, test, classes):
    """Splits of uint8 images with the training split's per-channel mean and std (float32), each
    channel's computed over one float copy of that channel alone."""
    mean, std = [], []
    for c in range(train[0].shape[1]):
        values = train[0][:, c].float()
        mean.append(values.mean().item())
        std.append(values.std().clamp_min(1e-6).item())
    num_classes = len(classes) if classes else int(max(y.max() for _, y in (train, val, test))) + 1
    return Splits(name, train, val, test, num_classes=num_classes, classes=classes,
                  normalisation={"mean": mean, "std": std})


def eval_batch_size(images):
    """Images to an evaluation batch: EVAL_BATCH_VALUES pixel values, at least one image."""
    return max(1, EVAL_BATCH_VALUES // math.prod(images.shape[1:]))


def normalise(pixels, normalisation):
    """uint8 pixels (N, C, S, S) as the network takes them: float32, (x - mean) / std per channel."""
    mean, std = _statistics(tuple(normalisation["mean"]), tuple(normalisation["std"]), pixels.device)
    return (pixels.float() - mean) / std


@functools.lru_cache(maxsize=8)
def _statistics(mean, std, device):
    """The statistics as (1, C, 1, 1) float32 tensors on `device`, made once: a tensor made on a GPU
    for every batch would wait for the GPU each time."""
    return tuple(torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1) for v in (mean, std))


def subset(splits, n_train, n_eval):
    """The first n of each split (they are already shuffled and stratified); None: all of it."""
    def head(part, n):
        return part[0][:n], part[1][:n]

    return replace(splits, train=head(splits.train, n_train), val=head(splits.val, n_eval),
                   test=head(splits.test, n_eval))
