"""Image files as the arrays a model is trained on and given: Pillow and NumPy only, so that
predict.py, which must run where torch is not installed, reads images exactly as training did.

An image's declared size is checked before any pixel is decoded (a decompression bomb is one
line, never a traceback). Its pixels become 8 bits by the range of its mode, never by clipping:
16-bit by /257; 32-bit integer and floating-point by the range the file declares (TIFF's
SMin/SMaxSampleValue or Min/MaxSampleValue), else by the range the user chooses (--pixel-range),
else one line asking for that choice. It then becomes grey (Pillow's "L") or colour ("RGB") as
the model's channels say (an alpha channel dropped, as torchvision's loader drops it), and, if
its size differs, is resized to S x S with Pillow's bilinear filter: (C, S, S) uint8.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, UsageError, first_line

# What counts as an image file in a folder (torchvision's ImageFolder list); anything else in
# a folder (.DS_Store, notes.txt, a README) is not an image and is passed over.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SIXTEEN_BITS = ("I;16", "I;16L", "I;16B", "I;16N")  # Pillow's 16-bit grey modes, by byte order
WIDE = ("I", "F")                                    # 32-bit integer and floating-point grey
GREY_MODES = ("1", "L", "LA", "La", *SIXTEEN_BITS, *WIDE)  # Pillow's single-channel modes (with alpha)
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# Far above any image these CNNs train on (a 7,000 x 7,000 photograph is 49 million pixels), far
# below what decoding would need to exhaust a machine's memory (Pillow warns at 89 million).
MAX_MEGAPIXELS = 50.0


@dataclass(frozen=True)
class Reading:
    """How image files are read, the same in training and in predict."""
    max_megapixels: float = MAX_MEGAPIXELS  # refuse an image whose declared size is larger
    pixel_range: str | None = None          # 32-bit or float pixels without a declared range: "LOW:HIGH" or
    #                                         "image" (each image's own minimum and maximum)


def parse_pixel_range(text):
    """(low, high) of "LOW:HIGH", or "image"; UsageError naming the choices otherwise."""
    if text == "image":
        return text
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        low = high = None
    if low is None or not high > low:
        raise UsageError(f"--pixel-range {text}: give LOW:HIGH with LOW < HIGH (0:1, 0:4095, ...) or image")
    return low, high


def is_image_file(path):
    return Path(path).suffix.lower() in EXTENSIONS


def is_grey(image):
    return image.mode in GREY_MODES


def has_alpha(image):
    return image.mode in ALPHA_MODES or "transparency" in image.info


def open_image(path, source="", reading=Reading()):
    """The image at `path`, decoded once its declared size is within reading.max_megapixels; a
    file Pillow cannot read, or one too large, is one DataError line."""
    from PIL import Image, UnidentifiedImageError

    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # its bomb check is the one below
    try:
        # Pillow's warnings on a damaged file (corrupt EXIF, ...) are not the user's business: the
        # image reads as meant, or the error below says what is wrong in one line.
        with warnings.catch_warnings(action="ignore"), Image.open(path) as image:  # open: the header only
            width, height = image.size
            if width * height > reading.max_megapixels * 1e6:
                raise DataError(f"{source}{path}: {width:,} x {height:,} pixels, over the limit of "
                                f"{reading.max_megapixels:g} million (--max-megapixels); not decoded")
            image.load()  # the first frame of a multi-frame file
            # In memory, its file let go (Pillow keeps a GIF's or a TIFF's open to seek frames, and
            # a folder of them would hold a file per image); what the reader needs of it kept.
            frame = image.copy()
            frame.format, frame.tag_v2 = image.format, getattr(image, "tag_v2", None)
        return frame
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{source}{path} cannot be read as an image ({first_line(e)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def declared_range(image):
    """(low, high) that a file declares for its pixels, or None."""
    if image.format == "PNG" and image.mode == "I":  # a PNG holds at most 16 bits
        return 0.0, 65535.0
    tags = getattr(image, "tag_v2", None) or {}
    for low, high in ((340, 341), (280, 281)):  # TIFF SMin/SMaxSampleValue, Min/MaxSampleValue
        if high in tags:
            first = [v[0] if isinstance(v, tuple) else v for v in (tags.get(low, 0), tags[high])]
            return float(first[0]), float(first[1])
    return None


def eight_bits(image, path, reading=Reading()):
    """The image with 8-bit pixels: unchanged where they are, else grey "L" scaled by its mode's
    range (16-bit: /257; 32-bit and float: the declared or chosen range), never clipped at 255."""
    from PIL import Image

    if image.mode in SIXTEEN_BITS:
        scaled = np.asarray(image).astype(np.float64) / 257
    elif image.mode in WIDE:
        pixels = np.asarray(image).astype(np.float64)
        chosen = parse_pixel_range(reading.pixel_range) if reading.pixel_range else None
        low_high = declared_range(image) or chosen
        if low_high is None:
            kind = "32-bit integer" if image.mode == "I" else "floating-point"
            raise DataError(f"{path}: {kind} pixels with no declared range; choose how to read them: --pixel-range "
                            "LOW:HIGH (0:1 for floats in 0-1, 0:4095 for 12 bits, ...) or --pixel-range image "
                            "(each image's own minimum and maximum)")
        low, high = (pixels.min(), pixels.max()) if low_high == "image" else low_high
        scaled = (pixels - low) * (255 / ((high - low) or 1))
    else:
        return image
    return Image.fromarray(np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8), "L")


def to_array(image, channels, size, path="", reading=Reading()):
    """The image as uint8 (channels, size, size): 8 bits (eight_bits), converted to grey (1) or
    colour (3), resized bilinearly to size x size where it is not that size already."""
    from PIL import Image

    converted = eight_bits(image, path, reading).convert("L" if channels == 1 else "RGB")
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.BILINEAR)
    array = np.asarray(converted, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)
