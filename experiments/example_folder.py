"""A small image folder of real images, to try `--dataset folder:PATH` without images of your own.

It writes PNGs in torchvision's ImageFolder layout (PATH/<class>/<n>.png) from a built-in data
set: scikit-learn's handwritten digits (8x8, offline, the default) or Fashion-MNIST (28x28;
Debian's dataset-fashion-mnist). The images are the data set's first ones of each class.

    python -m experiments.example_folder --out my_images
    python -m experiments.example_folder --dataset fashion-mnist --classes 0 1 2 3 --per-class 150 --out fashion4
    python -m experiments.example_folder --dataset fashion-mnist --test-split --per-class 1000 --classes 0 1 2 3 4 5 6 7 8 9 --out fashion-test
    python -m experiments.example_folder --dataset fashion-mnist --classes 0 1 2 3 4 5 6 7 8 9 --per-class 400 --size 32 --colour --out colour32

--size S resizes each image to S x S (bilinear); --colour writes each as an RGB image whose three
channels are the grey one (a colour folder, as a torchvision model's stem reads it).

With --test-split it writes the project's test split instead, the pixels exactly as a run read
them and the folders named as a model names its classes: `python -m neuroshrink.predict
MODEL.onnx fashion-test` then scores a deployed model on the run's own test images.
"""

import sys

import numpy as np
from PIL import Image

from neuroshrink.errors import DataError
from neuroshrink.flags import Parser, positive

FASHION_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def get_args_parser():
    p = Parser(prog="python -m experiments.example_folder", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits", choices=("digits", "fashion-mnist"))
    p.add_argument("--classes", type=int, nargs="+", default=[0, 1, 2, 3], help="class numbers to take (0-9)")
    p.add_argument("--per-class", type=positive(int), default=50, help="images per class")
    p.add_argument("--test-split", action="store_true",
                   help="the project's test split of the data set (as runs test on it), folders named as a model's "
                        "classes: to check a deployed model with neuroshrink.predict")
    p.add_argument("--size", type=positive(int), default=None, metavar="S", help="resize each image to S x S")
    p.add_argument("--colour", action="store_true", help="RGB images (the grey channel three times)")
    p.add_argument("--out", required=True, help="the folder to write; it must not exist yet")
    return p


def images_of(dataset):
    """(uint8 images (N, H, W), labels (N,), class names) of the built-in data set, unsplit."""
    if dataset == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return (bunch.images * 255 / 16).round().astype(np.uint8), bunch.target, [str(c) for c in range(10)]
    from neuroshrink.data import SYSTEM_IDX_DIRS, read_idx

    folder = SYSTEM_IDX_DIRS["fashion-mnist"]
    try:
        x, y = (read_idx(folder / f"{name}.gz") for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))
    except DataError as e:
        raise DataError(f"{e}; apt-get install dataset-fashion-mnist") from None
    return x, y, list(FASHION_NAMES)


def test_split_of(dataset):
    """(uint8 images (N, H, W), labels, class names) of the project's test split, as runs read
    it; a "/" in a class name (Fashion-MNIST's T-shirt/top) becomes "-", as predict reads it."""
    from neuroshrink import data

    splits = data.load(dataset)
    names = [name.replace("/", "-") for name in splits.class_names()]
    return splits.test[0][:, 0].numpy(), splits.test[1].numpy(), names


def main(args):
    from pathlib import Path

    out = Path(args.out)
    if out.exists():
        raise DataError(f"--out {out} exists; give a new folder")
    x, y, names = (test_split_of if args.test_split else images_of)(args.dataset)
    for c in args.classes:
        if not 0 <= c < len(names):
            raise DataError(f"--classes {c}: choose from 0 to {len(names) - 1}")
        chosen = x[y == c][:args.per_class]
        (out / names[c]).mkdir(parents=True)
        for n, pixels in enumerate(chosen):
            image = Image.fromarray(pixels)
            image = image.resize((args.size, args.size), Image.Resampling.BILINEAR) if args.size else image
            (image.convert("RGB") if args.colour else image).save(out / names[c] / f"{n:04d}.png")
        print(f"{out / names[c]}: {len(chosen)} images")


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except DataError as e:
        sys.exit(f"error: {e}")
