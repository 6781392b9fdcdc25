"""neuroshrink/user_data.py: your own images (an image folder or an .npz) through the demo and
the shrink study, cached, and every bad input refused in one line with nothing written."""
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import train_phase2
from conftest import fails, files, huge_header_png, run, sweep_here
from experiments.shrink import command as shrink
from neuroshrink import data, export, build

CLASSES = ("0-zero", "1-one", "2-two", "3-three")  # sorted as numbered: ImageFolder orders classes by name
PER_CLASS = 15
USER_CNN = """
import torch.nn as nn


def tiny(in_channels, image_size, num_classes, width):
    channels = max(1, round(8 * width))
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(4 * channels, 16), nn.ReLU(), nn.Linear(16, num_classes))


def colour_only(in_channels, image_size, num_classes, width):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(num_classes))
"""


def digit_images():
    """scikit-learn's 8x8 digits 0-3, PER_CLASS of each, as uint8 arrays, in class order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = [(bunch.images[bunch.target == c][:PER_CLASS] * 255 / 16).astype(np.uint8) for c in range(len(CLASSES))]
    return np.concatenate(images), np.repeat(np.arange(len(CLASSES)), PER_CLASS)


def write_folder(root, images=None, labels=None):
    """An ImageFolder of PNGs: root/<class>/<n>.png (the names sort in the arrays' order)."""
    if images is None:
        images, labels = digit_images()
    for n, (image, label) in enumerate(zip(images, labels)):
        (root / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / CLASSES[label] / f"{n:03d}.png")
    return root


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "images")


def test_a_folder_trains_through_the_demo_and_its_model_keeps_the_class_names(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the cache goes to ./data
    (tmp_path / "user_cnn.py").write_text(USER_CNN)
    monkeypatch.setattr(sys, "path", list(sys.path))
    result, _ = run(tmp_path, "--quick", "--graph-at-end", "--dataset", f"folder:{folder}", "--model", "user_cnn:tiny",
                    "--width", "1")
    assert result["status"] == "complete" and result["settings"]["classes"] == sorted(CLASSES)
    assert result["settings"]["data_sizes"] == {"train": 36, "val": 12, "test": 12}  # 60 / 20 / 20, stratified
    out = tmp_path / "PAI"
    evaluated = train_phase2.evaluate_saved(str(out))
    assert evaluated["test_acc"] == result["final"]["test_acc"] == result["final"]["onnx"]["test_acc"]
    extra = {"classes.json": ""}
    torch.jit.load(str(out / "model.ts"), _extra_files=extra)
    assert json.loads(extra["classes.json"]) == sorted(CLASSES)
    meta = export.ort_session(out / "model.onnx").get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == sorted(CLASSES)


def test_the_cache_is_used_on_the_next_load_and_refreshed_when_a_file_changes(folder, tmp_path, capsys):
    first = data.load(f"folder:{folder}", tmp_path)
    assert "read and cached in" in capsys.readouterr().out
    again = data.load(f"folder:{folder}", tmp_path)
    assert "from the cache" in capsys.readouterr().out
    assert all(torch.equal(a[i], b[i]) for a, b in zip((first.train, first.val, first.test),
                                                        (again.train, again.val, again.test)) for i in (0, 1))
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(folder / "0-zero" / "000.png")  # a file changes
    changed = data.load(f"folder:{folder}", tmp_path)
    assert "read and cached in" in capsys.readouterr().out
    assert not torch.equal(torch.cat([changed.train[0], changed.val[0], changed.test[0]]),
                           torch.cat([first.train[0], first.val[0], first.test[0]]))


def test_an_npz_of_the_folders_images_gives_the_same_splits(folder, tmp_path):
    images, labels = digit_images()
    np.savez(tmp_path / "digits.npz", x=images, y=labels)
    from_folder, from_npz = data.load(f"folder:{folder}", tmp_path), data.load(f"npz:{tmp_path / 'digits.npz'}")
    for a, b in zip((from_folder.train, from_folder.val, from_folder.test), (from_npz.train, from_npz.val, from_npz.test)):
        assert torch.equal(a[1], b[1]) and torch.allclose(a[0], b[0])
    assert from_npz.classes == ["0", "1", "2", "3"] and from_folder.classes == sorted(CLASSES)


def test_train_val_test_folders_are_the_splits(tmp_path):
    images, labels = digit_images()
    for part, rows in (("train", slice(0, None, 2)), ("test", slice(1, None, 2))):
        write_folder(tmp_path / "images" / part, images[rows], labels[rows])
    splits = data.load(f"folder:{tmp_path / 'images'}", tmp_path)
    assert sum(splits.sizes().values()) == 60 and splits.sizes()["test"] == 30  # test/ as given; val from train/


def test_mixed_grey_and_colour_becomes_the_majority(folder, tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "1-one" / "colour.png")
    splits = data.load(f"folder:{folder}", tmp_path)
    assert splits.in_channels == 1 and "1 of 61 images converted to grey" in capsys.readouterr().out


def test_image_size_resizes_images_of_different_sizes(folder, tmp_path):
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(folder / "2-two" / "big.png")
    assert data.load(f"folder:{folder}", tmp_path, image_size=10).image_size == 10


def test_default_budgets_of_a_users_model_are_fractions_it_can_reach(tmp_path, monkeypatch, capsys):
    """tiny has 676 parameters at width 1 on 4 classes and at least 158 at any width, about twice
    that with a dendrite set: 1/2 (338) is reachable by both methods, 1/4 (169) and 1/8 (84) are
    not, and are named."""
    (tmp_path / "user_cnn.py").write_text(USER_CNN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    args = SimpleNamespace(dataset="folder:x", model="user_cnn:tiny", methods=["plain", "dendritic"], wide=1.0,
                           max_dendrites=1)
    shape = dict(in_channels=1, image_size=8, num_classes=4)
    assert sum(p.numel() for p in build.model_factory("user_cnn:tiny")(width=1.0, **shape).parameters()) == 676
    assert shrink.default_budgets(args, shape) == [338]
    left_out = capsys.readouterr().out
    assert "budgets left out: 1/4 (169: " in left_out and "1/8 (84: " in left_out
    for budget in (338,):
        for method in args.methods:
            shrink.width_for(args, shrink.BY_NAME[method], budget, shape)  # raises if out of reach


def test_the_shrink_study_runs_on_a_users_model_and_folder(folder, tmp_path, monkeypatch):
    (tmp_path / "user_cnn.py").write_text(USER_CNN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    output = sweep_here(tmp_path, "--dataset", f"folder:{folder}", "--model", "user_cnn:tiny", "--budgets", "600",
                        "--methods", "dendritic", "matched", "--trials", "1", "--recipe", "default", script="shrink")
    report = (tmp_path / "results" / "folder-images" / "shrink-user_cnn-tiny.md").read_text()
    assert "| 600 | dendritic |" in report and "| 600 | matched |" in report, output
    # the folder read once (its files checked, the cache read) for the study's 3 runs, not once a run
    assert output.count(f"folder:{folder}: ") == 1 and output.count("\ndata: folder:") == 3, output


@pytest.mark.parametrize("script, flags", [("width_sweep", ["--widths", "1"]),
                                           ("search", ["--widths", "1", "--trials", "1", "--methods", "plain"])])
def test_a_sweep_reads_a_users_folder_once_for_all_its_runs(folder, tmp_path, monkeypatch, script, flags):
    (tmp_path / "user_cnn.py").write_text(USER_CNN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    output = sweep_here(tmp_path, "--dataset", f"folder:{folder}", "--model", "user_cnn:tiny", *flags, script=script)
    # the width sweep's dendritic run and its plain pair; the search's trial and its tested seed
    assert output.count("\ndata: folder:") == 2 and output.count(f"folder:{folder}: ") == 1, output


def bad_input(tmp_path, case):
    """(--dataset value, extra flags, the message's telling part) for one kind of bad input."""
    root = tmp_path / "images"
    if case == "no such path":
        return f"folder:{tmp_path / 'nowhere'}", [], "does not exist"
    if case == "no class folders":
        root.mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "a.png")
        return f"folder:{root}", [], "no class sub-folders"
    if case == "no images":
        (root / "cats").mkdir(parents=True)
        (root / "dogs").mkdir()
        (root / "dogs" / "notes.txt").write_text("no image here")
        return f"folder:{root}", [], "no images"
    if case == "one class":
        images, labels = digit_images()
        write_folder(root, images[labels == 0], labels[labels == 0])
        return f"folder:{root}", [], "one class (0-zero); a classifier needs at least 2"
    write_folder(root)
    if case == "undecodable image":
        (root / "2-two" / "broken.png").write_bytes(b"not a png")
        return f"folder:{root}", [], f"{root / '2-two' / 'broken.png'} cannot be read as an image"
    if case == "decompression bomb":  # a 0.1 kB PNG whose header says 20,000 x 20,000 pixels
        huge_header_png(root / "2-two" / "bomb.png")
        return f"folder:{root}", [], f"{root / '2-two' / 'bomb.png'}: 20,000 x 20,000 pixels, over the limit of 50 million"
    if case == "different sizes":
        Image.fromarray(np.zeros((12, 12), np.uint8)).save(root / "2-two" / "big.png")
        return f"folder:{root}", [], "images of different sizes (8x8 in"
    if case == "too few images":
        for extra in sorted((root / "3-three").iterdir())[3:]:
            extra.unlink()
        return f"folder:{root}", [], "class 3-three has 3 image(s); the train / validation / test split needs at least 5"
    if case == "model does not fit":
        (tmp_path / "user_cnn.py").write_text(USER_CNN)
        return f"folder:{root}", ["--model", "user_cnn:colour_only"], "its forward pass on a batch of shape (2, 1, 8, 8)"
    images, labels = digit_images()
    arrays = {"npz without y": dict(x=images), "npz without x": dict(y=labels),
              "npz labels do not match": dict(x=images, y=labels[:-1]),
              "npz labels not integers": dict(x=images, y=labels + 0.5)}[case]  # whole floats are taken
    np.savez(tmp_path / "data.npz", **arrays)
    return f"npz:{tmp_path / 'data.npz'}", [], {"npz without y": "has no array 'y'", "npz without x": "has no array 'x'",
                                                "npz labels do not match": "y has shape (59,) for 60 images",
                                                "npz labels not integers": "are float64, not integers"}[case]


@pytest.mark.parametrize("case", ["no such path", "no class folders", "no images", "one class", "undecodable image",
                                  "decompression bomb", "different sizes", "too few images", "model does not fit", "npz without y",
                                  "npz without x", "npz labels do not match", "npz labels not integers"])
def test_bad_input_is_one_line_and_changes_nothing(quick_run, tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    dataset, flags, message = bad_input(tmp_path, case)
    (tmp_path / "data").mkdir()
    before = files(quick_run["out"])
    assert message in fails(["--out", str(quick_run["out"]), "--dataset", dataset, *flags], capsys)
    assert files(quick_run["out"]) == before
    if case != "model does not fit":  # there the images are fine, and their cache is kept
        assert not any((tmp_path / "data").iterdir())


def test_image_size_is_refused_for_a_built_in_data_set(quick_run, capsys):
    before = files(quick_run["out"])
    assert "--image-size is for your own images" in fails(["--out", str(quick_run["out"]), "--image-size", "16"], capsys)
    assert files(quick_run["out"]) == before


def test_a_folder_too_large_for_the_memory_free_stops_in_one_line(folder, tmp_path, monkeypatch, capsys):
    from neuroshrink import user_data

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(user_data, "available_memory", lambda: 10_000)  # bytes: 60 8x8 images need 26,880
    message = fails(["--dataset", f"folder:{folder}", "--quick"], capsys)
    assert "60 images of 1 x 8 x 8 take 26.9 kB while loading, more than the 10.0 kB free" in message
    assert "--image-size S smaller, or a folder of fewer images" in message and not (tmp_path / "PAI").exists()
