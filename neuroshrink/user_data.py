"""Your own images as a data set, split and normalised as the built-in sets are.

    folder:PATH   torchvision's ImageFolder layout: one sub-folder per class holding PNG, JPEG
                  (or any image Pillow reads). If PATH has train/ and test/ sub-folders (and
                  optionally val/), each laid out so, they are the splits; otherwise the images
                  are split 60 / 20 / 20 with the fixed seed the built-in sets use.
    npz:PATH      arrays x (N, H, W), (N, C, H, W) or (N, H, W, C) with C 1 or 3 (the layout
                  the shape proves; an array layout="nchw" or "nhwc" where it reads both ways),
                  pixel values uint8 0-255, floats 0-1 or 0-255, or bool; y (N,) of integer
                  labels (any values: class k is the k-th smallest); optionally x_test and
                  y_test (then the test split, and validation is carved from x).

Images keep their channels: all grey gives 1 channel, all colour 3. A folder that mixes them is
converted to the kind most of its images are (said in one line). One image size for all: the
files' own when they agree and are square, else --image-size S resizes every image to S x S.
A folder is read once and cached as tensors in <data folder>/cache/, keyed by the files' names,
sizes and modification times: the next run starts at once, and a changed folder is read again.
"""

import hashlib
import json
import math
import os
import tempfile
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


def load(name, image_size, cache_dir, split, reading=image_files.Reading()):
    """(train, val, test, classes) of a folder: or npz: source, images uint8 (N, C, S, S); `split(labels, val_fraction, test_fraction)` makes the fixed-seed split; `reading`:
    how image files are read (their size limit, the range of 32-bit and float pixels)."""
    kind, _, path = name.partition(":")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"--dataset {name}: {path} does not exist")
    if kind == "npz":
        return load_npz(path, image_size, split)
    return load_folder(path, image_size, cache_dir, split, reading)


# ---------------------------------------------------------------- folders

def load_folder(root, image_size, cache_dir, split, reading=image_files.Reading()):
    if not root.is_dir():
        raise DataError(f"--dataset folder:{root}: not a folder (for arrays use npz:{root})")
    parts = [p for p in ("train", "val", "test") if (root / p).is_dir()]
    if parts and not {"train", "test"} <= set(parts):
        raise DataError(f"folder:{root} has {'/, '.join(parts)}/ but not both train/ and test/: give both "
                        "(val/ is optional), or put the class folders in the folder itself")
    stats = [(p, p.stat()) for p in sorted(root.rglob("*")) if p.is_file()]
    key = json.dumps([str(root.resolve()), image_size,
                      [(str(p.relative_to(root)), st.st_size, st.st_mtime_ns) for p, st in stats]]
                     + ([reading.pixel_range] if reading.pixel_range else []))  # a cache made before it: no range
    cache = Path(cache_dir) / "cache" / f"folder-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]}.pt"
    saved = read_cache(cache, root)
    if saved and saved["key"] == key:
        print(f"folder:{root}: {sum(len(y) for _, y in saved['parts'])} images from the cache {cache}")
        return (*saved["parts"], saved["classes"])
    parts, classes = read_folder(root, parts, image_size, split, reading)
    write_cache(cache, {"key": key, "classes": classes, "parts": parts})
    print(f"folder:{root}: {sum(len(y) for _, y in parts)} images in {len(classes)} classes, read and cached in {cache}")
    return (*parts, classes)


def read_cache(cache, root):
    """The cache's contents, or None where there is none or it cannot be read (cut short by a full
    disk, say): it is only a copy, and the folder is read again (said in a line)."""
    if not cache.is_file():
        return None
    try:
        saved = torch.load(cache, weights_only=True)
        if not {"key", "classes", "parts"} <= set(saved):
            raise ValueError("not a cache of this project")
        return saved
    except Exception as e:  # torch raises RuntimeError, EOFError, pickle errors... for a damaged file
        print(f"folder:{root}: the cache {cache} cannot be read ({first_line(e)}); reading the folder again")
        return None


def write_cache(cache, contents):
    """Write the cache through a temporary file of its own and an atomic rename: a reader never
    sees half a file, and two processes caching the same folder at once both leave a good one."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=cache.parent, prefix=f"{cache.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(contents, temporary)
        os.replace(temporary, cache)
    finally:
        Path(temporary).unlink(missing_ok=True)


def read_folder(root, parts, image_size, split, reading):
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
    images = read_images(root, everything, image_size, reading)
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


def read_images(root, paths, image_size, reading=image_files.Reading()):
    """Every image as uint8 (N, C, S, S): the majority's channels, one square size, each read as
    images.to_array reads it for predict."""
    loaded = [image_files.open_image(p, f"folder:{root}: ", reading) for p in paths]
    alpha = sum(map(image_files.has_alpha, loaded))
    if alpha:
        print(f"folder:{root}: {alpha} of {len(loaded)} images have an alpha channel (transparency); it is dropped, "
              "as torchvision's loader drops it, here and in predict")
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
    fits_in_memory(len(loaded), channels, image_size, f"folder:{root}")
    return torch.from_numpy(np.stack([image_files.to_array(image, channels, image_size, path, reading)
                                      for image, path in zip(loaded, paths)]))


def fits_in_memory(count, channels, size, source):
    """Refuse, in one line, images that would not fit in the memory free now while they are loaded:
    three bytes a pixel value (the decoded images, stacked into one array, copied into the splits)
    and one channel at a time as float32 (the training split's statistics)."""
    need, free = count * size * size * (3 * channels + 4), available_memory()
    if free is not None and need > free:
        raise DataError(f"{source}: {count:,} images of {channels} x {size} x {size} take {amount(need)} while "
                        f"loading, more than the {amount(free)} free here; pass "
                        "--image-size S smaller, or a folder of fewer images")


def amount(size):
    return next(f"{size / scale:.1f} {unit}" for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1, "bytes"))
                if size >= scale or unit == "bytes")


def available_memory():
    """Bytes of memory free for a new allocation (Linux: MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


# ---------------------------------------------------------------- arrays

def load_npz(path, image_size, split):
    source = f"npz:{path}"
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as e:
        raise DataError(f"{source}: cannot be read as an .npz file ({first_line(e)})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{source} has no array {missing[0]!r}; it needs x (N, H, W), (N, C, H, W) or (N, H, W, C) "
                        "and y (N,), optionally x_test and y_test")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{source}: x_test and y_test go together; it has only one of them")
    layout = str(arrays["layout"]) if "layout" in arrays else None
    if layout not in (None, *LAYOUTS):
        raise DataError(f"{source}: layout is {layout!r}; choose from {', '.join(LAYOUTS)}")
    names = ["x", "x_test"] if "x_test" in arrays else ["x"]
    images = [channels_first(arrays[n], n, source, layout) for n in names]
    images = pixel_values(images, names, source)
    labels = [checked_labels(arrays[n.replace("x", "y")], n.replace("x", "y"), len(x), source)
              for n, x in zip(names, images)]
    classes = np.unique(np.concatenate(labels))
    if not np.array_equal(classes, np.arange(len(classes))):
        shown = ", ".join(map(str, classes[:5])) + (", ..." if len(classes) > 5 else "")
        print(f"{source}: the labels are {shown}, not 0..{len(classes) - 1}: class k is the k-th smallest, "
              "and its value is its class name")
    # float pixel values, resized, as the uint8 pixels a deployed model takes: rounded
    tensors = [(square(torch.from_numpy(x), image_size, source).round().clamp(0, 255).to(torch.uint8),
                torch.from_numpy(np.searchsorted(classes, y)).long())
               for x, y in zip(images, labels)]
    if len(tensors) == 2 and tensors[0][0].shape[1:] != tensors[1][0].shape[1:]:
        raise DataError(f"{source}: x holds images of {tuple(tensors[0][0].shape[1:])} (C, H, W), x_test of "
                        f"{tuple(tensors[1][0].shape[1:])}; they must be alike")
    names = [str(c) for c in classes]
    if len(tensors) == 1:
        return (*split_arrays(*tensors[0], names, split, source), names)
    (x, y), test = tensors
    return (*carve_val(x, y, names, split, source), test, names)


LAYOUTS = ("nchw", "nhwc")  # what an .npz may name in an array "layout" where x's shape reads both ways
CHANNELS = (1, 3)


def channels_first(x, name, source, layout=None):
    """x as (N, C, H, W), from the layout its shape proves: (N, H, W) is grey, (N, C, H, W) and
    (N, H, W, C) are told apart by which axis holds 1 or 3 channels (where both could, by which
    reading gives square images); a shape that still reads two ways needs `layout`."""
    shape = tuple(x.shape)
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        flat = f"; flat vectors? reshape them, e.g. x.reshape(-1, {math.isqrt(shape[1])}, {math.isqrt(shape[1])})" \
            if x.ndim == 2 and math.isqrt(shape[1]) ** 2 == shape[1] else ""
        raise DataError(f"{source}: {name} has shape {shape}; expected (N, H, W), (N, C, H, W) or (N, H, W, C) "
                        f"with C 1 or 3{flat}")
    first = shape[1] in CHANNELS and (layout or "nchw") == "nchw"
    last = shape[3] in CHANNELS and (layout or "nhwc") == "nhwc"
    if first and last:  # e.g. (N, 3, 32, 3): the reading that gives square images, if only one does
        first, last = shape[2] == shape[3], shape[1] == shape[2]
        if first == last:
            raise DataError(f"{source}: {name} of shape {shape} reads two ways, (N, C, H, W) = {shape} or "
                            f"(N, H, W, C) = {shape}; say which: np.savez(..., layout='nchw') or layout='nhwc'")
    if not (first or last):
        why = f" (layout {layout!r})" if layout else ""
        raise DataError(f"{source}: {name} of shape {shape} has no axis of 1 or 3 channels where a layout puts "
                        f"it{why}: expected (N, C, H, W) or (N, H, W, C) with C 1 or 3")
    if last:
        print(f"{source}: {name} is channel-last (N, H, W, C) = {shape} (Keras, TensorFlow): read as such")
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def pixel_values(images, names, source):
    """The images as float32 pixel values 0-255: uint8 and integers in 0-255 as they are, bool as
    0 and 255, floats in 0-1 scaled by 255 and floats in 0-255 as they are (either said in a
    line); NaN, infinity, other ranges and other types stopped in one line."""
    for x, name in zip(images, names):
        if x.dtype.kind not in "buif":
            raise DataError(f"{source}: {name} is {x.dtype}; pixel values are numbers (uint8 0-255, or floats)")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = ~np.isfinite(x)
            raise DataError(f"{source}: {name} holds {int(bad.sum()):,} NaN or infinite value(s), the first at index "
                            f"{tuple(int(i) for i in np.argwhere(bad)[0])}; replace or drop those images")
    kinds = {x.dtype.kind for x in images}
    if kinds == {"b"}:
        print(f"{source}: {' and '.join(names)} are bool: False is 0, True is 255")
        return [x.astype(np.float32) * 255 for x in images]
    low, high = min(float(x.min()) for x in images), max(float(x.max()) for x in images)
    if low < 0 or high > 255:
        raise DataError(f"{source}: pixel values from {low:g} to {high:g}; save raw pixel values, 0-255 (uint8) or "
                        "0-1 (floats), not normalised ones: the run normalises them itself")
    if "f" in kinds:
        scale = 255.0 if high <= 1 else 1.0
        print(f"{source}: floats from {low:g} to {high:g}: taken as " + ("0-1, scaled to 0-255" if scale > 1 else
                                                                          "pixel values 0-255")
              + " and rounded to whole values, the uint8 pixels a deployed model takes")
        return [x.astype(np.float32) * scale for x in images]
    return [x.astype(np.float32) for x in images]


def checked_labels(y, name, count, source):
    """The labels as integers: integer arrays as they are, floats that are whole numbers (as Keras
    saves them) as integers; anything else stopped in one line."""
    if y.ndim == 2 and len(y) == count:
        raise DataError(f"{source}: {name} has shape {y.shape}: one-hot? save the class numbers, y.argmax(1)")
    if y.ndim != 1 or len(y) != count:
        raise DataError(f"{source}: {name} has shape {y.shape} for {count} images; expected ({count},)")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        return y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"{source}: the labels {name} are {y.dtype}, not integers; save them as y.astype(int)")
    return y


def square(x, image_size, source):
    """(N, C, S, S) from (N, C, H, W), resized to --image-size if given."""
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
