"""Your data as you really have it: an .npz in any layout and dtype a user's tools write is read as
the user meant or stopped in one line, and the folder cache is only ever a copy. A property test
(Hypothesis) draws shapes, dtypes, value ranges and label sets and checks every outcome."""
import sys
from collections import Counter

import numpy as np
import torch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import fails, run
from neuroshrink import data, user_data
from neuroshrink.errors import DataError
from test_user_data import digit_images, write_folder


def load(path):
    """The splits of an .npz as user_data reads them, before normalisation."""
    return user_data.load_npz(path, None, data.split_indices)


def contents(train, val, test, classes):
    """Every image (uint8 pixels) with its class name, as a multiset: what a split must hold, in any order."""
    assert all(part[0].dtype == torch.uint8 for part in (train, val, test))
    return Counter((x.numpy().tobytes(), classes[int(y)]) for part in (train, val, test) for x, y in zip(*part))


def test_a_keras_channel_last_npz_trains_on_the_images_it_holds(tmp_path, capsys):
    """(N, H, W, 1) was read as (N, C=H, H=W, W=1), and --image-size, as the error advised, then
    trained on scrambled images."""
    images, labels = digit_images()
    np.savez(tmp_path / "keras.npz", x=images[..., None], y=labels)  # what Keras and TensorFlow give
    np.savez(tmp_path / "numpy.npz", x=images, y=labels)
    keras, plain = load(tmp_path / "keras.npz"), load(tmp_path / "numpy.npz")
    assert "channel-last (N, H, W, C) = (60, 8, 8, 1)" in capsys.readouterr().out
    assert keras[0][0].shape[1:] == (1, 8, 8) and contents(*keras) == contents(*plain)
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--dataset", f"npz:{tmp_path / 'keras.npz'}")
    assert result["status"] == "complete" and result["settings"]["data_sizes"]["train"] == 36


def test_nan_or_infinity_in_the_images_is_one_line_naming_how_many_and_where(tmp_path, quick_run, capsys):
    images, labels = digit_images()
    x = images.astype(np.float32)
    x[7, 2, 3], x[9, 0, 0] = np.nan, np.inf
    np.savez(tmp_path / "nan.npz", x=x, y=labels)
    message = fails(["--out", str(tmp_path / "run"), "--dataset", f"npz:{tmp_path / 'nan.npz'}"], capsys)
    assert "x holds 2 NaN or infinite value(s), the first at index (7, 0, 2, 3)" in message
    assert not (tmp_path / "run").exists()


def test_a_shape_that_reads_two_ways_names_both_and_how_to_choose(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (20, 3, 3, 3), dtype=np.uint8), np.repeat(np.arange(2), 10)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    with pytest.raises(DataError, match=r"reads two ways, \(N, C, H, W\) = .* or layout='nhwc'"):
        load(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=x, y=y, layout="nhwc")
    train, *_ = load(tmp_path / "b.npz")
    assert any(np.array_equal(image.numpy(), x[i].transpose(2, 0, 1)) for image in train[0] for i in range(20))


def test_a_damaged_cache_is_read_again_from_the_folder(tmp_path, capsys):
    folder = write_folder(tmp_path / "images")
    first = data.load(f"folder:{folder}", tmp_path)
    (cache,) = (tmp_path / "cache").glob("folder-*.pt")
    cache.write_bytes(cache.read_bytes()[:100])  # cut short: a full disk, a copy gone wrong
    capsys.readouterr()
    again = data.load(f"folder:{folder}", tmp_path)
    out = capsys.readouterr().out
    assert f"the cache {cache} cannot be read" in out and "reading the folder again" in out
    assert all(np.array_equal(a[0], b[0]) for a, b in zip((first.train, first.test), (again.train, again.test)))
    data.load(f"folder:{folder}", tmp_path)
    assert "from the cache" in capsys.readouterr().out  # written again, whole
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.name]  # no temporary file left


def cache_folder(folder, cache_dir, start):
    start.wait(30)  # both processes read and write the same new folder's cache at once
    sys.exit(0 if data.load(f"folder:{folder}", cache_dir).sizes()["train"] == 36 else 1)


def test_two_processes_caching_one_folder_at_once_both_end_with_a_good_cache(tmp_path):
    import multiprocessing

    folder = write_folder(tmp_path / "images")
    fork = multiprocessing.get_context("fork")  # no second start-up of torch
    start = fork.Event()
    workers = [fork.Process(target=cache_folder, args=(folder, tmp_path, start)) for _ in range(2)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".pt"]  # one cache, no temporary left
    assert data.load(f"folder:{folder}", tmp_path).sizes() == {"train": 36, "val": 12, "test": 12}


# ---------------------------------------------------------------- the property test

KINDS = ("uint8", "int64", "float 0-1", "float 0-255", "bool")


@st.composite
def npz_cases(draw):
    """An .npz as a user might save it, and what it means: (arrays, expected images and class
    names, or the start of the one-line error it must give)."""
    classes = draw(st.lists(st.integers(-1000, 1000), min_size=2, max_size=3, unique=True))
    per_class = draw(st.lists(st.integers(3, 7), min_size=len(classes), max_size=len(classes)))
    channels, size = draw(st.sampled_from((1, 3))), draw(st.integers(4, 7))
    layout = draw(st.sampled_from(("nhw", "nchw", "nhwc") if channels == 1 else ("nchw", "nhwc")))
    kind, broken = draw(st.sampled_from(KINDS)), draw(st.sampled_from((None,) * 3 + ("nan", "range")))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    pixels = rng.integers(0, 256, (sum(per_class), channels, size, size), dtype=np.uint8)
    pixels[0, 0, 0, 0] = 255  # the range is the full one, as an image's is
    labels = np.repeat(classes, per_class)
    meant = ((pixels > 127) * 255).astype(np.uint8) if kind == "bool" else pixels  # floats 0-1: rounded back
    stored = {"uint8": pixels, "int64": pixels.astype(np.int64), "float 0-1": pixels / np.float32(255),
              "float 0-255": pixels.astype(np.float32), "bool": pixels > 127}[kind]
    stored = {"nhw": stored[:, 0], "nchw": stored, "nhwc": stored.transpose(0, 2, 3, 1)}[layout]
    error = None
    if broken == "nan" and stored.dtype.kind == "f":
        stored = stored.copy()
        stored.flat[-1], error = np.nan, "x holds 1 NaN or infinite value(s)"
    elif broken == "range" and kind in ("int64", "float 0-255"):
        stored = stored.copy()
        stored.flat[-1], error = 300, "to 300; save raw pixel values, 0-255"
    elif min(per_class) < user_data.MIN_PER_CLASS:
        error = f"image(s); the train / validation / test split needs at least {user_data.MIN_PER_CLASS} per class"
    expected = Counter((m.tobytes(), str(c)) for m, c in zip(meant, labels))
    return {"x": stored, "y": labels}, expected, error


# derandomize: the same examples on every run, so that the suite's outcome never rests on a draw
@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=npz_cases())
def test_every_npz_is_read_as_meant_or_refused_in_one_line(case, tmp_path):
    arrays, expected, error = case
    path = tmp_path / "drawn.npz"
    np.savez(path, **arrays)
    try:
        train, val, test, classes = load(path)
    except DataError as e:
        assert error is not None and error in str(e) and "\n" not in str(e), str(e)
        return
    assert error is None, f"read, though it should have stopped with: {error}"
    assert contents(train, val, test, classes) == expected


def test_the_property_test_covers_each_outcome():
    """The drawn cases reach every layout, kind and error (a test that never draws a NaN proves nothing)."""
    seen = Counter()

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(case=npz_cases())
    def note(case):
        arrays, _, error = case
        seen[("error", error.split()[0] if error else None)] += 1
        seen[("dtype", arrays["x"].dtype.kind)] += 1
    note()
    assert {("error", e) for e in (None, "x", "to", "image(s);")} <= set(seen)
    assert {("dtype", k) for k in "buif"} <= set(seen)


def test_integer_labels_that_are_not_0_to_k_are_mapped_and_named(tmp_path, capsys):
    images, labels = digit_images()
    np.savez(tmp_path / "a.npz", x=images, y=labels * 10 + 7)
    *_, classes = load(tmp_path / "a.npz")
    assert classes == ["7", "17", "27", "37"] and "not 0..3: class k is the k-th smallest" in capsys.readouterr().out


def test_train_phase2_takes_floats_in_0_1_as_pixels_scaled(tmp_path, capsys):
    images, labels = digit_images()
    np.savez(tmp_path / "f.npz", x=images / np.float32(255), y=labels)
    result, _ = run(tmp_path, "--quick", "--no-dendrites", "--dataset", f"npz:{tmp_path / 'f.npz'}")
    assert "taken as 0-1, scaled to 0-255" in capsys.readouterr().out
    assert max(result["settings"]["normalisation"]["mean"]) > 1  # pixel values 0-255, as a deployed model gets


@st.composite
def folder_cases(draw):
    """A folder of class sub-folders as users keep them: odd class names, stray files, PNG and
    BMP with upper-case suffixes, grey and colour, empty or tiny classes. Returns (class name:
    [(file name, image)]), stray files, and the start of the error it must give or None."""
    size = draw(st.sampled_from((1, 2, 2, 3, 3)))
    names = draw(st.lists(st.sampled_from(["cat", "dog and bird", "Ünïcode", "ß-7", "1", "a b", "Éclair"]),
                          min_size=size, max_size=size, unique=True))
    counts = [draw(st.integers(5, 7)) for _ in names]
    short = draw(st.sampled_from(("enough",) * 3 + ("one empty", "one tiny", "all empty")))
    counts[-1] = {"enough": counts[-1], "one empty": 0, "one tiny": draw(st.integers(1, 4)), "all empty": 0}[short]
    counts = [0] * len(counts) if short == "all empty" else counts
    colour = draw(st.sampled_from(("all grey", "all colour", "one colour")))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    images, made = {}, 0
    for name, count in zip(names, counts):
        images[name] = []
        for i in range(count):
            rgb = colour == "all colour" or (colour == "one colour" and made == 0)
            pixels = rng.integers(0, 256, (5, 5, 3) if rgb else (5, 5), dtype=np.uint8)
            images[name].append((f"{i}{draw(st.sampled_from(['.png', '.PNG', '.bmp']))}", pixels))
            made += 1
    stray = draw(st.lists(st.sampled_from([".DS_Store", "notes.txt", "Thumbs.db"]), unique=True))
    total = sum(counts)
    error = ("one class" if len(names) < 2 else "no images" if total == 0 else
             "holds no images" if 0 in counts else
             f"the train / validation / test split needs at least {user_data.MIN_PER_CLASS}"
             if min(counts) < user_data.MIN_PER_CLASS else None)
    return images, stray, error


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=folder_cases())
def test_every_drawn_folder_is_read_as_meant_or_refused_in_one_line(case, tmp_path_factory):
    from PIL import Image

    images, stray, error = case
    root = tmp_path_factory.mktemp("folder")
    for name, files in images.items():
        (root / "images" / name).mkdir(parents=True)
        for file, pixels in files:
            Image.fromarray(pixels).save(root / "images" / name / file)
            (root / "images" / name / (file + ".txt")).write_text("a caption, not an image")
    for file in stray:
        (root / "images" / file).write_bytes(b"\0")
        for name in images:
            (root / "images" / name / file).write_bytes(b"\0")
    (root / "images" / "README.md").write_text("how these were collected")
    try:
        train, val, test, classes = user_data.load_folder(root / "images", None, root / "cache", data.split_indices)
    except DataError as e:
        assert error is not None and error in str(e) and "\n" not in str(e), (str(e), error)
        assert not (root / "cache").exists()  # nothing written
        return
    assert error is None, f"read, though it should have stopped with: {error}"
    assert classes == sorted(images)  # ImageFolder's order: by name
    grey = all(p.ndim == 2 for files in images.values() for _, p in files)
    meant = Counter((p[None] if grey else (np.repeat(p[None], 3, 0) if p.ndim == 2 else p.transpose(2, 0, 1)))
                    .tobytes() for files in images.values() for _, p in files)
    if grey or all(p.ndim == 3 for files in images.values() for _, p in files):  # nothing converted
        assert Counter(x.numpy().tobytes() for part in (train, val, test) for x in part[0]) == meant
    assert sum(len(part[1]) for part in (train, val, test)) == sum(map(len, images.values()))


def test_the_folder_property_test_covers_each_outcome():
    seen = Counter()

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(case=folder_cases())
    def note(case):
        seen[case[2] and case[2].split()[0]] += 1
    note()
    assert {None, "one", "no", "holds", "the"} <= set(seen), seen
