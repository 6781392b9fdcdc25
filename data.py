"""Datasets as normalised in-memory tensors with fixed train / validation / test splits.

- digits: scikit-learn's bundled 8x8 handwritten digits (1,797 images; no network, the default).
- mnist, fashion-mnist, cifar10: torchvision's dataset classes. Files are read from
  --data-dir (torchvision's layout, or the four IDX files, gzipped or not, in the folder
  itself); Fashion-MNIST is also found in Debian's `dataset-fashion-mnist` package.
  Only when no local copy exists does torchvision try to download into --data-dir.

Validation is carved from the training data with a fixed seed (SPLIT_SEED), so every
run, whatever its training seed, sees the same three splits. The test split is the
dataset's own test set where it has one, untouched.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
DEFAULT_DATA_DIR = Path("data")
SPLIT_SEED = 0          # fixed: the splits never depend on the training seed
VAL_FRACTION = 0.1      # of the training data (digits: of the whole set, and as much again for test)

# Where Debian's packages put the IDX files (apt-get install dataset-fashion-mnist).
SYSTEM_IDX_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DataError(Exception):
    """A dataset that cannot be found or read; the message says what to do."""


@dataclass
class Splits:
    name: str
    train: tuple  # (images float32 (N, C, S, S), labels int64 (N,))
    val: tuple
    test: tuple
    num_classes: int

    @property
    def in_channels(self):
        return self.train[0].shape[1]

    @property
    def image_size(self):
        return self.train[0].shape[-1]

    def sizes(self):
        return {part: len(getattr(self, part)[1]) for part in ("train", "val", "test")}


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


def _digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    train, val, test = split_indices(bunch.target, VAL_FRACTION * 2, VAL_FRACTION * 2)
    return (images[train], labels[train]), (images[val], labels[val]), (images[test], labels[test])


def _find_idx_folder(name, data_dir):
    """First folder holding all four IDX files, gzipped or raw."""
    for folder in (data_dir, SYSTEM_IDX_DIRS.get(name)):
        if folder is not None and all((folder / f).exists() or (folder / f"{f}.gz").exists()
                                      for f in IDX_FILES):
            return folder
    return None


def _install_idx_files(source, raw_folder):
    """Put local IDX files where torchvision looks, as its own download would."""
    from torchvision.datasets.utils import extract_archive

    raw_folder.mkdir(parents=True, exist_ok=True)
    for f in IDX_FILES:
        if (source / f).exists():
            shutil.copyfile(source / f, raw_folder / f)
        else:
            try:
                extract_archive(str(source / f"{f}.gz"), str(raw_folder))
            except (OSError, EOFError) as e:
                (raw_folder / f).unlink(missing_ok=True)
                raise DataError(f"cannot decompress {source / f}.gz: {e}") from None


def _torchvision(name, data_dir):
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    if name != "cifar10":
        raw_folder = data_dir / cls.__name__ / "raw"
        if not all((raw_folder / f).exists() for f in IDX_FILES):
            source = _find_idx_folder(name, data_dir)
            if source is not None:
                _install_idx_files(source, raw_folder)
    try:
        parts = [cls(str(data_dir), train=train, download=False) for train in (True, False)]
    except RuntimeError:  # torchvision's "Dataset not found" (cifar10: or corrupted)
        parts = None
    except Exception as e:  # a truncated or corrupt file fails inside torchvision's reader
        raise DataError(f"cannot read {name} in {data_dir}: {type(e).__name__}: {e}; "
                        "delete the damaged files and run again") from None
    if parts is None:
        try:
            parts = [cls(str(data_dir), train=train, download=True) for train in (True, False)]
        except Exception as e:
            hint = ("apt-get install dataset-fashion-mnist, or " if name == "fashion-mnist" else "")
            raise DataError(f"{name} is not in {data_dir} and could not be downloaded "
                            f"({str(e).splitlines()[-1] or type(e).__name__}); {hint}"
                            f"put the files in {data_dir}") from None

    def as_tensors(ds):
        images = torch.as_tensor(np.asarray(ds.data))
        images = images.permute(0, 3, 1, 2) if images.ndim == 4 else images.unsqueeze(1)  # NCHW
        labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
        if len(images) != len(labels):
            raise DataError(f"{name} in {data_dir}: {len(images)} images but {len(labels)} labels")
        return images.float(), labels

    (train_x, train_y), test = (as_tensors(ds) for ds in parts)
    train, val, _ = split_indices(train_y.numpy(), VAL_FRACTION)
    return (train_x[train], train_y[train]), (train_x[val], train_y[val]), test


def load(name, data_dir=None):
    """Load a dataset as Splits, normalised per channel with the training split's statistics.

    data_dir None means DEFAULT_DATA_DIR, created if needed; a given folder must exist.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if data_dir is None:
        data_dir = DEFAULT_DATA_DIR
    elif not Path(data_dir).is_dir():
        raise DataError(f"data folder {data_dir} does not exist")
    data_dir = Path(data_dir).resolve()
    if name == "digits":
        train, val, test = _digits()
    else:
        train, val, test = _torchvision(name, data_dir)

    mean = train[0].mean(dim=(0, 2, 3), keepdim=True)
    std = train[0].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    norm = [((x - mean) / std, y) for x, y in (train, val, test)]
    num_classes = int(max(y.max() for _, y in norm)) + 1
    return Splits(name, *norm, num_classes=num_classes)


def subset(splits, n_train, n_eval):
    """The first n of each split (they are already shuffled and stratified); for smoke runs."""
    def head(part, n):
        return part[0][:n], part[1][:n]

    return Splits(splits.name, head(splits.train, n_train), head(splits.val, n_eval),
                  head(splits.test, n_eval), splits.num_classes)
