"""Classify image files with a self-contained model.onnx: ONNX Runtime, Pillow and NumPy only.

    python -m neuroshrink.predict PAI/model.onnx shoe.png bag.jpg
    python -m neuroshrink.predict PAI/model.int8.onnx photos/ --top 3
    python -m neuroshrink.predict PAI/model.onnx test-images/ --json     # class sub-folders: accuracy too

Each image is read as training read it (grey or colour as the model's channels say, resized
bilinearly to its size where it differs) and given to the model as raw uint8 pixels; the model
normalises them itself and names its classes (its metadata, written by the export). A folder
is read one level down: its image files, and the image files of its sub-folders, whose names
are then the images' true classes and give an accuracy. Files that are not images (.DS_Store,
notes.txt) are passed over in a folder; a named file that is not an image is an error.
"""

import argparse
import json
import signal
import sys
from pathlib import Path

import numpy as np

from .errors import NeuroShrinkError, UsageError
from .images import MAX_MEGAPIXELS, Reading, is_image_file, open_image, to_array

NEEDED = ("classes", "image_size", "channels")  # metadata a self-contained model carries
BATCH = 256


class Model:
    """A self-contained model.onnx in ONNX Runtime, with what its metadata says of it."""

    def __init__(self, path, threads=1):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path}: no such model file")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.log_severity_level = threads, 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime raises its own types for a file that is no model
            raise UsageError(f"{path} cannot be loaded as an ONNX model ({type(e).__name__})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.input = self.session.get_inputs()[0]
        if not all(key in meta for key in NEEDED) or self.input.type != "tensor(uint8)":
            raise UsageError(f"{path} is not a self-contained model (raw pixels in, {', '.join(NEEDED)} in its "
                             "metadata); export its run again: python train_phase2.py --evaluate --out RUN_FOLDER")
        self.classes, self.image_size, self.channels = (json.loads(meta[key]) for key in NEEDED)
        self.pixel_range = json.loads(meta.get("pixel_range", "null"))  # as training read its images

    def probabilities(self, pixels):
        """Class probabilities (N, classes) for uint8 pixels (N, C, S, S)."""
        logits = np.concatenate([self.session.run(None, {self.input.name: pixels[i:i + BATCH]})[0]
                                 for i in range(0, len(pixels), BATCH)])
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def image_files(paths, classes):
    """(file, true class or None) for every image the paths name: a file itself, a folder's
    image files, and its sub-folders' image files labelled with the sub-folder's name."""
    # A folder cannot be named "T-shirt/top": "T-shirt-top" or "T-shirt_top" names that class.
    by_folder = {name.replace("/", sep): name for name in classes for sep in "/-_"}
    found = []
    for path in map(Path, paths):
        if path.is_file():
            found.append((path, None))
        elif path.is_dir():
            found += [(f, None) for f in sorted(path.iterdir()) if f.is_file() and is_image_file(f)]
            for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
                if sub.name not in by_folder:
                    raise UsageError(f"{sub}: a sub-folder is taken as the true class of its images, and "
                                     f"{sub.name!r} is not one of the model's ({', '.join(classes)})")
                found += [(f, by_folder[sub.name]) for f in sorted(sub.iterdir()) if f.is_file() and is_image_file(f)]
        else:
            raise UsageError(f"{path}: no such file or folder")
    if not found:
        raise UsageError(f"no image files ({', '.join(paths)}): PNG, JPEG, BMP, ...")
    return found


def read(files, model, max_megapixels=MAX_MEGAPIXELS):
    """The image files as the model's uint8 input (N, C, S, S), each read as training read it."""
    reading = Reading(max_megapixels, model.pixel_range)
    return np.stack([to_array(open_image(f, reading=reading), model.channels, model.image_size, f, reading)
                     for f in files])


def predict(model, paths, top=1, max_megapixels=MAX_MEGAPIXELS):
    """Every image the paths name, classified: [{"file", "label" (or None), "top": [(class,
    probability), ...]}], `top` classes each, the likeliest first."""
    if isinstance(model, (str, Path)):
        model = Model(model)
    found = image_files(paths, model.classes)
    pixels = read([f for f, _ in found], model, max_megapixels)
    probabilities = model.probabilities(pixels)
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]
    return [{"file": str(f), "label": label,
             "top": [(model.classes[c], float(p[c])) for c in order]}
            for (f, label), p, order in zip(found, probabilities, best)]


def accuracy(predictions):
    """Percent of the labelled images whose likeliest class is their folder's; None if none is."""
    labelled = [p for p in predictions if p["label"] is not None]
    if not labelled:
        return None
    return 100.0 * sum(p["top"][0][0] == p["label"] for p in labelled) / len(labelled), len(labelled)


def get_args_parser():
    p = argparse.ArgumentParser(prog="python -m neuroshrink.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a self-contained model.onnx or model.int8.onnx (a run's, or a study's deploy/)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files, or folders of them (sub-folders named by class give an accuracy)")
    p.add_argument("--top", type=int, default=1, metavar="K", help="the K likeliest classes of each image")
    p.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime's threads (default 1: an edge core)")
    p.add_argument("--max-megapixels", type=float, default=MAX_MEGAPIXELS, metavar="M",
                   help="refuse an image whose declared size is larger than M million pixels, before decoding it "
                        f"(default {MAX_MEGAPIXELS:g}; the same limit as training's)")
    return p


def cli(argv=None):
    args = get_args_parser().parse_args(argv)
    try:
        if args.top < 1 or args.threads < 1 or not args.max_megapixels > 0:
            raise UsageError("--top and --threads take a whole number of at least 1, --max-megapixels a number above 0")
        model = Model(args.model, args.threads)
        predictions = predict(model, args.images, min(args.top, len(model.classes)), args.max_megapixels)
    except NeuroShrinkError as e:
        sys.exit(f"error: {e}")
    scored = accuracy(predictions)
    if args.json:
        print(json.dumps({"model": args.model, "predictions": predictions,
                          "accuracy": scored and {"percent": scored[0], "images": scored[1]}}, indent=1))
        return
    for p in predictions:
        print(f"{p['file']}: " + ", ".join(f"{name} ({probability:.3f})" for name, probability in p["top"]))
    if scored:
        print(f"accuracy: {scored[0]:.2f} % of {scored[1]} images in class folders")


if __name__ == "__main__":
    if hasattr(signal, "SIGPIPE"):  # `predict ... | head` ends quietly, as a shell command should
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    cli()
