"""neuroshrink/images.py, the one image reader of training and predict: every file a user or an
attacker hands it reads as meant, or stops with one line. Targeted cases first (a
decompression bomb, 16-, 32-bit and float pixels, alpha), then a property-based test over modes,
sizes, depths, frames, encodings and damage, through both readers."""
import io
import warnings
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, TiffImagePlugin

from conftest import huge_header_png
from neuroshrink import images, predict, user_data
from neuroshrink.errors import DataError
from neuroshrink.images import Reading


def read_both(path, channels, size, reading=Reading()):
    """The file as training reads it (a folder's images) and as predict reads it: they must agree."""
    trained = user_data.read_images(path.parent, [path], size, reading).numpy().astype(np.uint8)[0]
    model = SimpleNamespace(channels=channels, image_size=size, pixel_range=reading.pixel_range)
    predicted = predict.read([path], model, reading.max_megapixels)[0]
    assert np.array_equal(trained, predicted)
    return trained


def one_line(error):
    message = str(error.value)
    assert "\n" not in message and message
    return message


def tiff(path, array, **tags):
    Image.fromarray(array).save(path, tiffinfo=tiff_tags(**tags))  # int32: mode "I"; float32: "F"
    return path


# ---------------------------------------------------------------- the targeted cases

def test_a_decompression_bomb_is_one_line_before_a_pixel_is_decoded(tmp_path):
    with pytest.raises(DataError) as error:
        images.open_image(huge_header_png(tmp_path / "bomb.png"))
    assert "bomb.png: 20,000 x 20,000 pixels, over the limit of 50 million (--max-megapixels)" in one_line(error)
    # Between Pillow's own warning and error limits (89 and 179 million): refused, not decoded, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="10,000 x 10,000 pixels"):
            images.open_image(huge_header_png(tmp_path / "large.png", 10_000, 10_000))
    Image.new("L", (100, 100)).save(tmp_path / "small.png")  # the limit is a setting
    with pytest.raises(DataError, match="100 x 100 pixels, over the limit of 0.001 million"):
        images.open_image(tmp_path / "small.png", reading=Reading(max_megapixels=0.001))


def test_sixteen_bit_grey_is_read_at_full_depth(tmp_path):
    depth = np.arange(0, 65536, 257, dtype=np.uint16)[:256].reshape(16, 16)  # 0, 257, ... 65535
    Image.fromarray(depth).save(tmp_path / "deep.png")  # uint16: Pillow's "I;16"
    assert np.array_equal(read_both(tmp_path / "deep.png", 1, 16)[0], np.arange(256).reshape(16, 16))


def test_a_32_bit_tiff_is_scaled_by_its_declared_range_or_asks_for_one(tmp_path):
    pixels = (np.arange(256, dtype=np.int32) * 1000).reshape(16, 16)  # 0 .. 255,000
    expected = np.arange(256).reshape(16, 16)
    assert np.array_equal(read_both(tiff(tmp_path / "declared.tif", pixels, smin=0, smax=255_000), 1, 16)[0], expected)
    bare = tiff(tmp_path / "bare.tif", pixels)
    with pytest.raises(DataError) as error:
        read_both(bare, 1, 16)
    assert "32-bit integer pixels with no declared range; choose how to read them: --pixel-range" in one_line(error)
    assert np.array_equal(read_both(bare, 1, 16, Reading(pixel_range="0:255000"))[0], expected)
    assert np.array_equal(read_both(bare, 1, 16, Reading(pixel_range="image"))[0], expected)


def test_a_float_tiff_of_0_to_1_reads_as_0_to_255(tmp_path):
    pixels = (np.arange(256, dtype=np.float32) / 255).reshape(16, 16)
    expected = np.arange(256).reshape(16, 16)
    bare = tiff(tmp_path / "bare.tif", pixels)
    with pytest.raises(DataError, match="floating-point pixels with no declared range"):
        read_both(bare, 1, 16)
    assert np.array_equal(read_both(bare, 1, 16, Reading(pixel_range="0:1"))[0], expected)
    declared = tiff(tmp_path / "declared.tif", pixels, smin=0.0, smax=1.0)
    assert np.array_equal(read_both(declared, 1, 16)[0], expected)


def test_an_alpha_channel_is_dropped_and_said(tmp_path, capsys):
    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert np.array_equal(read_both(tmp_path / "alpha.png", 3, 8), rgba[..., :3].transpose(2, 0, 1))
    assert "1 of 1 images have an alpha channel (transparency); it is dropped" in capsys.readouterr().out


def test_a_bad_pixel_range_is_one_line():
    from neuroshrink.config import RunConfig
    from neuroshrink.errors import UsageError

    with pytest.raises(UsageError, match="--pixel-range: give LOW:HIGH with LOW < HIGH"):
        RunConfig(pixel_range="1:0")


# ---------------------------------------------------------------- the property-based test

# Each mode Pillow may hand the reader, and the encodings that can hold it losslessly (JPEG:
# within its tolerance, at quality 100 without chroma subsampling).
MODES = {"1": ("PNG", "TIFF", "BMP", "GIF"), "L": ("PNG", "TIFF", "BMP", "GIF", "WEBP", "JPEG"),
         "LA": ("PNG", "TIFF"), "P": ("PNG", "TIFF", "BMP", "GIF"), "RGB": ("PNG", "TIFF", "BMP", "WEBP", "JPEG"),
         "RGBA": ("PNG", "TIFF", "WEBP"), "CMYK": ("TIFF", "JPEG"), "I;16": ("PNG", "TIFF"), "I": ("TIFF",),
         "F": ("TIFF",)}
SUFFIX = {"PNG": ".png", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "JPEG": ".jpg"}
DAMAGE = ("none",) * 4 + ("truncated", "huge header", "wrong extension")
JPEG_TOLERANCE = 16
EXAMPLES = 12  # per mode and encoding


def tiff_tags(**tags):
    info = TiffImagePlugin.ImageFileDirectory_v2()
    for tag, value in tags.items():
        info[{"smin": 340, "smax": 341, "vmin": 280, "vmax": 281}[tag]] = value
    return info


def drawn_image(draw, mode, side, rng):
    """(the image in memory, the pixels it means as (C, S, S) uint8, the Reading it needs, TIFF tags)."""
    reading, tags = Reading(), {}
    if mode == "I":  # 32-bit integers: a range declared in the file, or chosen by the user
        scale = draw(st.sampled_from((1, 1000)))
        meant = rng.integers(0, 256, (side, side))
        image = Image.fromarray((meant * scale).astype(np.int32))  # mode "I"
        declared = [{"smin": 0, "smax": 255 * scale}] + ([{"vmax": 255}] if scale == 1 else [])  # MaxSampleValue: 16 bits
        tags = draw(st.sampled_from(declared + [{}]))
        reading = Reading(pixel_range=None if tags else f"0:{255 * scale}")
    elif mode == "F":  # floats in 0-1
        meant = rng.integers(0, 256, (side, side))
        image = Image.fromarray((meant / 255).astype(np.float32))  # mode "F"
        tags = draw(st.sampled_from(({"smin": 0.0, "smax": 1.0}, {})))
        reading = Reading(pixel_range=None if tags else "0:1")
    elif mode == "I;16":
        raw = rng.integers(0, 65536, (side, side)).astype(np.uint16)
        image, meant = Image.fromarray(raw), np.rint(raw / 257)  # mode "I;16"
    else:  # 8 bits: the reference is Pillow's own conversion of the image in memory
        bands = len(mode) if mode not in ("1", "P") else 1
        raw = rng.integers(0, 256, (side, side, bands) if bands > 1 else (side, side)).astype(np.uint8)
        image = Image.fromarray(raw, "L" if mode in ("1", "P") else mode)
        image = (image.convert("1", dither=Image.Dither.NONE) if mode == "1" else
                 image.quantize(16) if mode == "P" else image)
        meant = np.asarray(image.convert("L" if mode in images.GREY_MODES else "RGB"))
    meant = np.asarray(meant, dtype=np.uint8)
    return image, (meant[None] if meant.ndim == 2 else meant.transpose(2, 0, 1)), reading, tags


PAIRS = [(mode, encoding) for mode, encodings in MODES.items() for encoding in encodings]


@st.composite
def image_files(draw, mode, encoding):
    """(file bytes, its suffix, the pixels it means (C, S, S), what must happen: "read", "error" or
    "either" (a truncated file whose cut spares every pixel may still read as meant), whether the
    encoding is lossy, the Reading, what was drawn)."""
    image, meant, reading, tags = drawn_image(draw, mode, draw(st.integers(1, 9)),
                                              np.random.default_rng(draw(st.integers(0, 2 ** 16))))
    frames = draw(st.integers(1, 2)) if encoding in ("GIF", "TIFF") else 1
    options = ({"lossless": True, "exact": True} if encoding == "WEBP" else {"quality": 100, "subsampling": 0}
               if encoding == "JPEG" else {"tiffinfo": tiff_tags(**tags)} if tags else {})
    if frames > 1:  # the reader takes the first frame
        options |= {"save_all": True, "append_images": [image.transpose(Image.Transpose.ROTATE_90)]}
    buffer = io.BytesIO()
    image.save(buffer, encoding, **options)
    data, suffix, outcome = buffer.getvalue(), SUFFIX[encoding], "read"
    damage = draw(st.sampled_from(DAMAGE))
    if damage == "truncated":
        data, outcome = data[:draw(st.integers(0, len(data) - 1))], "either"
    elif damage == "huge header":
        data, suffix, outcome = huge_header_png(None, 30_000, 30_000), ".png", "error"
    elif damage == "wrong extension":
        suffix = draw(st.sampled_from(sorted(set(SUFFIX.values()) - {suffix})))
    return data, suffix, meant, outcome, encoding == "JPEG", reading, (mode, encoding, damage, frames)


@pytest.mark.parametrize("mode, encoding", PAIRS)
def test_every_drawn_file_reads_as_meant_or_stops_with_one_line(mode, encoding, tmp_path_factory):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
    @given(case=image_files(mode, encoding))
    def check(case):
        read_as_meant_or_one_line(case, tmp_path_factory)
    check()


def read_as_meant_or_one_line(case, tmp_path_factory):
    data, suffix, meant, outcome, lossy, reading, drawn = case
    folder = tmp_path_factory.mktemp("image")
    path = folder / f"drawn{suffix}"
    path.write_bytes(data)
    try:
        opened = images.open_image(path, reading=reading)
        got = read_both(path, 1 if images.is_grey(opened) else 3, opened.size[0], reading)
    except DataError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        assert outcome != "read", (drawn, str(e))
        assert [p.name for p in folder.iterdir()] == [path.name]  # nothing written
        return
    assert outcome != "error", (drawn, "read, though it should have stopped")
    if got.shape[0] == 3 and meant.shape[0] == 1:  # grey kept as colour by its encoding (WebP): R = G = B
        meant = np.repeat(meant, 3, axis=0)
    assert got.shape == meant.shape, drawn
    difference = np.abs(got.astype(int) - meant.astype(int)).max(initial=0)
    assert difference <= (JPEG_TOLERANCE if lossy else 0), (drawn, difference)


def test_the_image_property_test_reaches_every_damage_and_second_frames():
    seen = Counter()
    for mode, encoding in PAIRS:
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
        @given(case=image_files(mode, encoding))
        def note(case):
            seen[case[-1][2]] += 1
            seen["frames", case[-1][3]] += 1
        note()
    assert set(DAMAGE) | {("frames", 2)} <= set(seen), seen
