"""Image files as the arrays a model is trained on and given: Pillow and NumPy only, so that
predict.py, which must run where torch is not installed, reads images exactly as training did.

An image becomes grey (Pillow's "L") or colour ("RGB") as the model's channels say, then, if
its size differs, is resized to S x S with Pillow's bilinear filter: (C, S, S) uint8.
"""

from pathlib import Path

import numpy as np

from .errors import DataError, first_line

# What counts as an image file in a folder (torchvision's ImageFolder list); anything else in
# a folder (.DS_Store, notes.txt, a README) is not an image and is passed over.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # Pillow's single-channel modes


def is_image_file(path):
    return Path(path).suffix.lower() in EXTENSIONS


def is_grey(image):
    return image.mode in GREY_MODES


def open_image(path, source=""):
    """The image at `path`, decoded; a file Pillow cannot read is one DataError line."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
        return image
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise DataError(f"{source}{path} cannot be read as an image ({first_line(e)})") from None


def to_array(image, channels, size):
    """The image as uint8 (channels, size, size): converted to grey (1) or colour (3), resized
    bilinearly to size x size where it is not that size already."""
    from PIL import Image

    converted = image.convert("L" if channels == 1 else "RGB")
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.BILINEAR)
    array = np.asarray(converted, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
