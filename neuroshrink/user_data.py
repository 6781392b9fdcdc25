"""Your own images as a data set, split and normalised as the built-in sets are.

    folder:PATH   torchvision's ImageFolder layout: one sub-folder per class holding PNG, JPEG
                  (or any image Pillow reads). If PATH has train/ and test/ sub-folders (and
                  optionally val/), each laid out so, they are the splits; otherwise the images
                  are split 60 / 20 / 20 with the fixed seed the built-in sets use.
    npz:PATH      arrays x (N, H, W) or (N, C, H, W) and y (N,) of integer labels, optionally
                  x_test and y_test (then the test split, and validation is carved from x).

Images keep their channels: all grey gives 1 channel, all colour 3. A folder that mixes them is
converted to the kind most of its images are (said in one line). One image size for all: the
files' own when they agree and are square, else --image-size S resizes every image to S x S.
A folder is read once and cached as tensors in <data folder>/cache/, keyed by the files' names,
sizes and modification times: the next run starts at once, and a changed folder is read again.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from . import images as image_files
from .errors import DataError, first_line

KINDS = ("folder", "npz")
MIN_PER_CLASS = 5       # a stratified 60 / 20 / 20 split needs at least one image per class in each part


def is_user_source(name):
    return name.partition(":")[0] in KINDS and bool(name.partition(":")[2])


def label(name):
    """A name for the source that is safe in a path or a study name: the built-in name, or
    folder-<last path part> / npz-<file stem>."""
    kind, _, path = name.partition(":")
    return f"{kind}-{Path(path).stem}" if is_user_source(name) else name


def load(name, image_size, cache_dir, split):
    """(train, val, test, classes) of a folder: or npz: source, images float (N, C, S, S) not yet
    normalised; `split(labels, val_fraction, test_fraction)` makes the fixed-seed split."""
    kind, _, path = name.partition(":")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"--dataset {name}: {path} does not exist")
    if kind == "npz":
        return load_npz(path, image_size, split)
    return load_folder(path, image_size, cache_dir, split)


# ---------------------------------------------------------------- folders

def load_folder(root, image_size, cache_dir, split):
    if not root.is_dir():
        raise DataError(f"--dataset folder:{root}: not a folder (for arrays use npz:{root})")
    parts = [p for p in ("train", "val", "test") if (root / p).is_dir()]
    if parts and not {"train", "test"} <= set(parts):
        raise DataError(f"folder:{root} has {'/, '.join(parts)}/ but not both train/ and test/: give both "
                        "(val/ is optional), or put the class folders in the folder itself")
    stats = [(p, p.stat()) for p in sorted(root.rglob("*")) if p.is_file()]
    key = json.dumps([str(root.resolve()), image_size,
                      [(str(p.relative_to(root)), st.st_size, st.st_mtime_ns) for p, st in stats]])
    cache = Path(cache_dir) / "cache" / f"folder-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]}.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved["key"] == key:
            print(f"folder:{root}: {sum(len(y) for _, y in saved['parts'])} images from the cache {cache}")
            return (*((x.float(), y) for x, y in saved["parts"]), saved["classes"])
    parts, classes = read_folder(root, parts, image_size, split)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "classes": classes, "parts": [(x.to(torch.uint8), y) for x, y in parts]},
               cache.with_suffix(".tmp"))
    os.replace(cache.with_suffix(".tmp"), cache)  # written once the folder read without error
    print(f"folder:{root}: {sum(len(y) for _, y in parts)} images in {len(classes)} classes, read and cached in {cache}")
    return (*parts, classes)


def read_folder(root, parts, image_size, split):
    """The images of the class folders (under train/, val/, test/ when `parts` names them)."""
    from torchvision.datasets.folder import find_classes, make_dataset

    top = root / "train" if parts else root
    try:
        classes, class_to_idx = find_classes(top)
    except FileNotFoundError:
        raise DataError(f"folder:{root}: no class sub-folders in {top} (one folder of images per class)") from None
    if len(classes) < 2:
        raise DataError(f"folder:{root}: one class ({classes[0]}); a classifier needs at least 2 class folders")
    samples = {}
    for part in parts or [None]:
        folder = root / part if part else root
        unknown = sorted(set(find_classes(folder)[0]) - set(classes)) if part else []
        if unknown:
            raise DataError(f"folder:{root}: {part}/ has classes that train/ has not: {', '.join(unknown)}")
        samples[part] = make_dataset(folder, class_to_idx, extensions=image_files.EXTENSIONS, allow_empty=True)
    everything = [path for found in samples.values() for path, _ in found]
    if not everything:
        raise DataError(f"folder:{root}: no images (PNG, JPEG, ...) in its class folders")
    empty = [c for c in classes if not any(i == class_to_idx[c] for found in samples.values() for _, i in found)]
    if empty:
        raise DataError(f"folder:{root}: class folder {empty[0]} holds no images")
    images = read_images(root, everything, image_size)
    labels = torch.tensor([i for found in samples.values() for _, i in found])
    if not parts:
        return split_arrays(images, labels, classes, split, f"folder:{root}"), classes
    start, arrays = 0, {}
    for part, found in samples.items():
        arrays[part] = (images[start:start + len(found)], labels[start:start + len(found)])
        start += len(found)
    if "val" not in arrays:
        arrays["train"], arrays["val"] = carve_val(*arrays["train"], classes, split, f"folder:{root}/train")
    return [arrays[p] for p in ("train", "val", "test")], classes


def read_images(root, paths, image_size):
    """Every image as float (N, C, S, S): the majority's channels, one square size, each read as
    images.to_array reads it for predict."""
    loaded = [image_files.open_image(p, f"folder:{root}: ") for p in paths]
    grey = [image_files.is_grey(image) for image in loaded]
    channels = 1 if sum(grey) * 2 >= len(grey) else 3
    converted = sum(g != (channels == 1) for g in grey)
    if converted:
        print(f"folder:{root}: {converted} of {len(loaded)} images converted to "
              f"{'grey' if channels == 1 else 'colour'}, as most of its images are")
    sizes = {image.size for image in loaded}
    if image_size is None:
        (width, height), *others = sorted(sizes)
        if others:
            example = {image.size: path for image, path in zip(loaded, paths)}
            raise DataError(f"folder:{root}: images of different sizes ({width}x{height} in {example[(width, height)]}, "
                            f"{others[0][0]}x{others[0][1]} in {example[others[0]]}); pass --image-size S to resize all")
        if width != height:
            raise DataError(f"folder:{root}: the images are {width}x{height}, not square; pass --image-size S")
        image_size = width
    return torch.from_numpy(np.stack([image_files.to_array(image, channels, image_size) for image in loaded])).float()


# ---------------------------------------------------------------- arrays

def load_npz(path, image_size, split):
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as e:
        raise DataError(f"npz:{path}: cannot be read as an .npz file ({first_line(e)})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"npz:{path} has no array {missing[0]!r}; it needs x (N, H, W) or (N, C, H, W) and y (N,), "
                        "optionally x_test and y_test")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"npz:{path}: x_test and y_test go together; it has only one of them")
    pairs = [(arrays["x"], arrays["y"], "x", "y")]
    if "x_test" in arrays:
        pairs.append((arrays["x_test"], arrays["y_test"], "x_test", "y_test"))
    for x, y, xn, yn in pairs:
        if x.ndim not in (3, 4):
            raise DataError(f"npz:{path}: {xn} has shape {x.shape}; expected (N, H, W) or (N, C, H, W)")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"npz:{path}: {yn} has shape {y.shape} for {len(x)} images in {xn}; expected ({len(x)},)")
        if y.dtype.kind not in "iu":
            raise DataError(f"npz:{path}: the labels {yn} are {y.dtype}, not integers; save them as y.astype(int)")
    classes = np.unique(np.concatenate([y for _, y, _, _ in pairs]))
    tensors = [(square(torch.from_numpy(x).float(), image_size, f"npz:{path}"),
                torch.from_numpy(np.searchsorted(classes, y)).long()) for x, y, _, _ in pairs]
    names = [str(c) for c in classes]
    if len(pairs) == 1:
        return (*split_arrays(*tensors[0], names, split, f"npz:{path}"), names)
    (x, y), test = tensors
    return (*carve_val(x, y, names, split, f"npz:{path}"), test, names)


def square(x, image_size, source):
    """(N, C, S, S) from (N, H, W) or (N, C, H, W), resized to --image-size if given."""
    x = x.unsqueeze(1) if x.ndim == 3 else x
    if image_size is not None and x.shape[-2:] != (image_size, image_size):
        return torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
    if x.shape[-1] != x.shape[-2]:
        raise DataError(f"{source}: the images are {x.shape[-1]}x{x.shape[-2]}, not square; pass --image-size S")
    return x


def carve_val(x, y, classes, split, source):
    """(train, val): validation carved from the training images with the fixed seed, 10 % as for
    the built-in sets, or more where 10 % would leave a class without a validation image."""
    counts = torch.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        c = int(counts.argmin())
        raise DataError(f"{source}: class {classes[c]} has {int(counts[c])} training image(s); carving a "
                        "validation split needs at least 2 per class")
    train, val, _ = split(y.numpy(), max(0.1, len(classes) / len(y)))
    return (x[train], y[train]), (x[val], y[val])


def split_arrays(x, y, classes, split, source):
    """The fixed-seed stratified 60 / 20 / 20 split, once every class has enough images for it."""
    counts = torch.bincount(y, minlength=len(classes))
    if len(classes) < 2:
        raise DataError(f"{source}: one class; a classifier needs at least 2")
    if counts.min() < MIN_PER_CLASS:
        c = int(counts.argmin())
        raise DataError(f"{source}: class {classes[c]} has {int(counts[c])} image(s); the train / validation / "
                        f"test split needs at least {MIN_PER_CLASS} per class")
    parts = split(y.numpy(), 0.2, 0.2)
    return [(x[i], y[i]) for i in parts]
