"""Self-contained exports and `python -m neuroshrink.predict`: a finished run's model.onnx and
model.int8.onnx take raw pixels and carry their classes and normalisation, and predict over
the run's test images, written as PNG files, gives the run's reported accuracy without torch."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import train_phase2
from conftest import ROOT, huge_header_png, run
from neuroshrink import data, export, predict

PREDICT = [sys.executable, "-m", "neuroshrink.predict"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A plain --quick run on digits trained past chance (15 epochs), quantized to int8, and its
    test images written as lossless PNG files in class folders, as the run read them."""
    tmp = tmp_path_factory.mktemp("predict")
    result, _ = run(tmp, "--quick", "--no-dendrites", "--min-epochs", "15", "--quantize", "int8")
    quick = train_phase2.QUICK
    splits = data.subset(data.load("digits"), quick["n_train"], quick["n_eval"])
    images = tmp / "test-images"
    for i, (pixels, label) in enumerate(zip(splits.test[0], splits.test[1])):
        folder = images / splits.class_names()[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[0].numpy(), "L").save(folder / f"{i:03d}.png")
    return {"result": result, "out": tmp / "PAI", "images": images, "splits": splits}


def predicted(*argv, cwd=ROOT):
    return subprocess.run([*PREDICT, *map(str, argv)], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("file, key", [("model.onnx", "onnx"), ("model.int8.onnx", "int8")])
def test_predict_over_the_test_images_as_png_gives_the_reported_accuracy(trained, file, key):
    final = trained["result"]["final"]
    assert final["test_acc"] > 50  # a model that learned, so that agreement means something
    done = predicted(trained["out"] / file, trained["images"], "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["accuracy"] == {"percent": final[key]["test_acc"], "images": 256}  # exactly: lossless pixels
    if key == "onnx":
        assert final["onnx"]["test_acc"] == pytest.approx(final["test_acc"])  # the trained model's own


def test_the_models_carry_their_classes_input_and_normalisation(trained):
    settings, splits = trained["result"]["settings"], trained["splits"]
    assert settings["normalisation"] == splits.normalisation
    for file, key in (("model.onnx", "onnx"), ("model.int8.onnx", "int8")):
        meta = export.read_metadata(trained["out"] / file)
        assert meta["classes"] == [str(i) for i in range(10)] and (meta["image_size"], meta["channels"]) == (8, 1)
        assert meta["normalisation"] == splits.normalisation and meta["dataset"] == "digits"
        assert meta["test_acc"] == trained["result"]["final"][key]["test_acc"]
        (given,) = export.ort_session(trained["out"] / file).get_inputs()
        assert (given.name, given.type, given.shape) == ("pixels", "tensor(uint8)", ["batch", 1, 8, 8])


def test_fashion_models_name_their_classes():
    assert data.Splits("fashion-mnist", (), (), (), 10).class_names()[9] == "Ankle boot"


def test_predict_runs_where_torch_and_perforatedai_cannot_be_imported(trained):
    script = f"""
import sys
sys.modules["torch"] = sys.modules["perforatedai"] = None  # any import of either now fails
sys.argv = ["predict", {str(trained["out"] / "model.onnx")!r}, {str(trained["images"] / "3")!r}, "--top", "2"]
from neuroshrink import predict
predict.cli()
assert not {{"torch", "perforatedai"}} & {{name.split(".")[0] for name, m in sys.modules.items() if m}}
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(list((trained["images"] / "3").iterdir()))
    first = lines[0].split(": ", 1)[1].split(", ")  # "file: 3 (0.912), 8 (0.040)"
    assert len(first) == 2 and all(part.endswith(")") for part in first)


def test_predict_names_each_image_and_skips_what_is_not_an_image_in_a_folder(trained, tmp_path):
    shutil.copytree(trained["images"] / "7", tmp_path / "7")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "7" / "notes.txt").write_text("not an image")
    done = predicted(trained["out"] / "model.onnx", tmp_path)
    assert done.returncode == 0, done.stderr
    *lines, summary = done.stdout.splitlines()
    assert len(lines) == len(list((trained["images"] / "7").iterdir())) and summary.startswith("accuracy: ")


def bad_inputs(trained, tmp):
    (tmp / "notes.txt").write_text("not an image")
    (tmp / "labels").mkdir(), (tmp / "empty").mkdir()
    shutil.copy(next((trained["images"] / "1").iterdir()), tmp / "labels")
    shutil.copytree(trained["images"] / "1", tmp / "classes" / "one")
    splits = trained["splits"]
    export.export_network(trained["out"] / "model.ts", tmp / "network.onnx", splits.normalise(splits.val[0]))
    good = trained["out"] / "model.onnx"
    return {"a missing image": ([good, tmp / "missing.png"], "no such file or folder"),
            "a missing model": ([tmp / "missing.onnx", tmp / "labels"], "no such model file"),
            "a named file that is no image": ([good, tmp / "notes.txt"], "cannot be read as an image"),
            "a decompression bomb": ([good, huge_header_png(tmp / "bomb.png")], "20,000 x 20,000 pixels, over the "
                                     "limit of 50 million (--max-megapixels); not decoded"),
            "a file that is no model": ([tmp / "notes.txt", tmp / "labels"], "cannot be loaded as an ONNX model"),
            "a model without the metadata": ([tmp / "network.onnx", tmp / "labels"], "not a self-contained model"),
            "a sub-folder that is no class": ([good, tmp / "classes"], "'one' is not one of the model's (0, 1, 2"),
            "a folder with no image": ([good, tmp / "empty"], "no image files"),
            "--top 0": ([good, tmp / "labels", "--top", "0"], "--top and --threads")}


def test_bad_input_is_one_line_and_a_non_zero_exit(trained, tmp_path):
    for case, (argv, expected) in bad_inputs(trained, tmp_path).items():
        done = predicted(*argv)
        assert done.returncode != 0 and done.stdout == "", case
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, (case, done.stderr)
        assert expected in done.stderr, (case, done.stderr)


def test_evaluate_exports_an_older_run_folder_again_self_contained(trained, tmp_path):
    out = tmp_path / "PAI"
    shutil.copytree(trained["out"], out)
    splits = trained["splits"]
    export.export_network(out / "model.ts", out / "model.onnx", splits.normalise(splits.val[0]))  # as runs wrote it
    record = json.loads((out / "results.json").read_text())
    del record["settings"]["normalisation"]
    (out / "results.json").write_text(json.dumps(record))
    evaluated = train_phase2.evaluate_saved(str(out))
    assert evaluated["onnx"]["test_acc"] == trained["result"]["final"]["onnx"]["test_acc"]
    assert evaluated["int8"]["test_acc"] == trained["result"]["final"]["int8"]["test_acc"]  # the run had int8
    assert json.loads((out / "results.json").read_text())["settings"]["normalisation"] == trained["splits"].normalisation
    assert predict.Model(out / "model.onnx").classes == [str(i) for i in range(10)]
    assert np.array_equal(*(export.ort_logits(export.ort_session(f), splits.val[0].numpy())
                            for f in (out / "model.onnx", trained["out"] / "model.onnx")))


def test_example_folder_writes_the_test_split_as_runs_read_it(tmp_path):
    """The committed command behind docs/deploy.md's predict accuracies: the test split's pixels."""
    from experiments import example_folder

    out = tmp_path / "digits-test"
    example_folder.main(example_folder.get_args_parser().parse_args(
        ["--test-split", "--per-class", "1000", "--classes", *map(str, range(10)), "--out", str(out)]))
    splits = data.load("digits")
    written = {(p.parent.name, np.asarray(Image.open(p)).tobytes()) for p in out.glob("*/*.png")}
    meant = {(splits.class_names()[y], x[0].numpy().tobytes()) for x, y in zip(splits.test[0], splits.test[1])}
    assert len(list(out.glob("*/*.png"))) == 360 and written == meant


def test_example_folder_writes_colour_images_at_a_size_a_torchvision_model_reads(tmp_path):
    from experiments import example_folder

    out = tmp_path / "colour"
    example_folder.main(example_folder.get_args_parser().parse_args(
        ["--per-class", "3", "--size", "32", "--colour", "--out", str(out)]))
    with Image.open(next(out.glob("0/*.png"))) as image:
        pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.shape == (32, 32, 3) and (pixels[..., 0] == pixels[..., 2]).all()
    assert len(list(out.glob("*/*.png"))) == 12
