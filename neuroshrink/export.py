"""The trained model, saved for inference, what an edge deployment pays for it, and int8.

model.ts: a TorchScript trace of the trained model, which loads with torch alone (no
perforatedai). model_clean.pt: for dendritic runs the library's own cleaned model
(`prepare_final_model`; unpickling it needs perforatedai), for plain runs the model itself.
torch.export fails on the library's modules, and the cleaned model can differ from the
trained one (perforatedai 3.2.9 drops the dendrites of a layer with exactly one dendrite
set), so the trace is taken from the trained model and the difference is measured.

model.onnx: the same trace through the TorchScript-based ONNX exporter (dynamo=False; the
dynamo exporter fails on the library's modules, see docs/usage.md), with a dynamic batch
dimension, made self-contained: it takes raw uint8 pixels and normalises them itself, and its
metadata carries the class names, the image size and channels, the normalisation, its test
accuracy and the versions that made it (docs/deploy.md). It is checked in ONNX Runtime
against PyTorch. model.int8.onnx: ONNX Runtime's static post-training quantization (QDQ,
per-channel int8 weights, int8 activations) of the network, calibrated on training images,
with the same normalisation and metadata. Latency is measured where an edge device runs it:
ONNX Runtime on one CPU thread, next to TorchScript on one thread, in the same process.
"""

import functools
import json
import logging
import os
import subprocess
import time
import warnings
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from .data import eval_batch_size, normalise
from .errors import first_line

ONNX_OPSET = 17
CALIBRATION_IMAGES = 512  # training images int8 calibration sees (never validation or test)
TOLERANCE = 1e-4  # largest logit difference between ONNX Runtime and PyTorch that is float rounding
PIXELS = "pixels"  # a self-contained model's input: raw uint8 pixels, NCHW
NETWORK_INPUT = "images"  # the network's own input: normalised float images (an older model.onnx's input)


@contextmanager
def torchscript_quietly():
    """TorchScript is deprecated upstream and says so on every use; it works here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # The library's forward branches on tensors that are fixed once training is over;
        # the trace records one branch (checked below against the model's own outputs).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def export(folder, model, clean, splits):
    """Write <folder>/model_clean.pt and <folder>/model.ts (with the class names, if any, as its
    extra file classes.json); return how far apart the cleaned model's logits are from the
    trained model's on the validation images (a batch at a time: a whole split's activations
    at once can take gigabytes)."""
    model.eval(), clean.eval()

    def batches():
        return (splits.normalise(pixels) for pixels in splits.val[0].split(eval_batch_size(splits.val[0])))
    with torch.no_grad():
        difference = max((clean(x) - model(x)).abs().max().item() for x in batches())
    torch.save(clean, folder / "model_clean.pt")
    with torchscript_quietly():
        traced = torch.jit.trace(model, splits.normalise(splits.val[0][:2]), check_trace=False)
        with torch.no_grad():
            for x in batches():
                torch.testing.assert_close(traced(x), model(x))
    classes = splits.classes
    traced.save(str(folder / "model.ts.tmp"), _extra_files={"classes.json": json.dumps(classes)} if classes else {})
    os.replace(folder / "model.ts.tmp", folder / "model.ts")  # never half a file
    if difference > 1e-4:
        print(f"warning: the library's cleaned model (model_clean.pt) differs from the trained "
              f"model by up to {difference:.3g} in its logits; model.ts is the trained model")
    return difference


def load_torchscript(path, device="cpu"):
    with torchscript_quietly():
        return torch.jit.load(str(path), map_location=device).eval()


def median_ms(forward, images, batch_sizes=(1, 256), min_seconds=0.3):
    """Median milliseconds of forward(batch) per batch size (batches from `images`), after a
    warm-up; repeated for at least `min_seconds` and 5 times."""
    times = {}
    for size in batch_sizes:
        batch = images[:size]
        for _ in range(3):
            forward(batch)
        samples, start = [], time.perf_counter()
        while time.perf_counter() - start < min_seconds or len(samples) < 5:
            t0 = time.perf_counter()
            forward(batch)
            samples.append(time.perf_counter() - t0)
        times[str(size)] = 1000 * sorted(samples)[len(samples) // 2]
    return times


def inference_ms(path, images, batch_sizes=(1, 256), min_seconds=0.3):
    """Median milliseconds per forward pass of the TorchScript model at `path` on the CPU, with
    the process's threads, per batch size."""
    model = load_torchscript(path)
    with torch.no_grad():
        return median_ms(model, images.cpu(), batch_sizes, min_seconds)


@contextmanager
def torch_threads(n):
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# ---------------------------------------------------------------- ONNX and ONNX Runtime

def export_network(model_ts, target, images):
    """`target`: the TorchScript model at `model_ts` as ONNX, taking normalised float images
    (input "images", batch dimension dynamic). The network only: self_contained() adds the rest."""
    traced = load_torchscript(model_ts)
    with torchscript_quietly(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter's notice
        warnings.filterwarnings("ignore", "no signature found")  # it reads a traced module's inputs from `images`
        torch.onnx.export(traced, (images[:2].cpu(),), str(target), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=[NETWORK_INPUT], output_names=["logits"],
                          dynamic_axes={NETWORK_INPUT: {0: "batch"}, "logits": {0: "batch"}})
    return target


def self_contained(source, target, normalisation, metadata):
    """Write `target`: the ONNX model at `source` made deployable on its own. Its input becomes
    raw pixels, uint8 (N, C, S, S) as the training images were read, which a Cast, Sub and Div
    at the front normalise exactly as training did; `metadata` (class names, image size,
    normalisation, versions, ...) goes into its metadata_props, values JSON-encoded. A model
    that takes pixels already (a self-contained one, exported again) only gets the metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    network_input = next((i for i in graph.input if i.name == NETWORK_INPUT), None)
    if network_input is not None:
        shape = ["batch", *(d.dim_value for d in network_input.type.tensor_type.shape.dim[1:])]
        graph.input.remove(network_input)
        graph.input.insert(0, helper.make_tensor_value_info(PIXELS, TensorProto.UINT8, shape))
        for name in ("mean", "std"):
            value = np.asarray(normalisation[name], np.float32).reshape(1, -1, 1, 1)
            graph.initializer.append(numpy_helper.from_array(value, f"pixel_{name}"))
        steps = [helper.make_node("Cast", [PIXELS], ["pixels_float"], to=TensorProto.FLOAT, name="pixels_to_float"),
                 helper.make_node("Sub", ["pixels_float", "pixel_mean"], ["pixels_centred"], name="minus_mean"),
                 helper.make_node("Div", ["pixels_centred", "pixel_std"], [NETWORK_INPUT], name="over_std")]
        for step in reversed(steps):  # before every node: the network reads NETWORK_INPUT from them
            graph.node.insert(0, step)
        metadata = {"normalisation": normalisation, **metadata}
    props = {p.key: p.value for p in model.metadata_props} | {k: json.dumps(v) for k, v in metadata.items()}
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(target) + ".tmp")
    os.replace(str(target) + ".tmp", target)  # never half a file
    return Path(target)


def read_metadata(path):
    """An ONNX model's metadata, values decoded (those the quantizer wrote are plain text)."""
    def decoded(text):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return {k: decoded(v) for k, v in ort_session(path).get_modelmeta().custom_metadata_map.items()}


def describe(splits, **about):
    """What a self-contained model carries about itself besides its normalisation: its classes,
    its input, and what made it (`about`: the run's dataset, model, seed, library versions, ...)."""
    return {"classes": splits.class_names(), "image_size": splits.image_size, "channels": splits.in_channels,
            "input": f"{PIXELS}: uint8 (N, {splits.in_channels}, {splits.image_size}, {splits.image_size}), "
                     "raw pixel values as the training images held them",
            "neuroshrink": project_revision(),
            "onnxruntime": version("onnxruntime"), **about}


@functools.cache  # once a process: a study ships many files
def project_revision():
    """The commit of this checkout (with "+changes" when it has uncommitted ones), else "unknown"."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty=+changes"],
                                capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return commit.stdout.strip() or "unknown"


def ort_session(path, threads=1):
    """An ONNX Runtime session on the CPU with `threads` threads (1: an edge core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def model_input(session, pixels, normalisation):
    """What the session's model takes for `pixels` (uint8): the pixels themselves for a
    self-contained model, normalised by `normalisation` for a network-only one (an older run's)."""
    if session.get_inputs()[0].type == "tensor(uint8)":
        return pixels.cpu().numpy()
    return normalise(pixels.cpu(), normalisation).numpy()


def ort_logits(session, x):
    name, batch_size = session.get_inputs()[0].name, eval_batch_size(x)
    return np.concatenate([session.run(None, {name: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)])


def ort_accuracy(session, pixels, labels, normalisation):
    x = model_input(session, pixels, normalisation)
    return 100.0 * float((ort_logits(session, x).argmax(1) == labels.cpu().numpy()).mean())


def check_onnx(path, model, splits):
    """How the ONNX model at `path`, given the raw pixels, compares with the trained model given
    the normalised images: the largest logit difference on the validation images, its test
    accuracy, its bytes."""
    session = ort_session(path)
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device  # the model may be on a GPU
    with torch.no_grad():
        reference = torch.cat([model(splits.normalise(x.to(device))).cpu()
                               for x in splits.val[0].split(eval_batch_size(splits.val[0]))]).float().numpy()
    logits = ort_logits(session, model_input(session, splits.val[0], splits.normalisation))
    difference = float(np.abs(logits - reference).max())
    return {"bytes": path.stat().st_size, "max_logit_difference": difference, "within_tolerance": difference <= TOLERANCE,
            "test_acc": ort_accuracy(session, *splits.test, splits.normalisation)}


def latency(path, pixels, normalisation, min_seconds=0.3, torchscript=None, batch_sizes=(1, 256)):
    """One-thread milliseconds per forward pass at each batch size (of `pixels`, given as the
    model takes them): ONNX Runtime, and the TorchScript model beside it when given."""
    session, x = ort_session(path), pixels[:max(batch_sizes)].cpu()
    name, given = session.get_inputs()[0].name, model_input(session, x, normalisation)
    times = {"ort_ms": median_ms(lambda b: session.run(None, {name: b}), given, batch_sizes, min_seconds)}
    if torchscript is not None:
        model = load_torchscript(torchscript)
        with torch_threads(1), torch.no_grad():
            times["torchscript_ms"] = median_ms(model, normalise(x, normalisation), batch_sizes, min_seconds)
    return times


class CalibrationImages:
    """ONNX Runtime's calibration reader over `images` (training images only), in batches."""

    def __init__(self, images, batch_size=64):
        self.batches = iter([{NETWORK_INPUT: images[i:i + batch_size].cpu().numpy()}
                             for i in range(0, len(images), batch_size)])

    def get_next(self):
        return next(self.batches, None)


@contextmanager
def per_tensor_said_once():
    """ONNX Runtime quantizes a 1-D weight (a BatchNorm scale that the library's wrapper keeps as
    a tensor of its own) per tensor, as it must, and warns on the root logger for each one: 20
    lines for a dendritic ResNet-18. Counted here instead, and said in one line."""
    found = []

    def said(record):  # a logging filter: False drops the record
        if "is out-of-range for weight" in record.getMessage():
            found.append(record)
            return False
        return True
    logging.getLogger().addFilter(said)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(said)
        if found:
            print(f"int8: {len(found)} one-dimensional weights quantized per tensor (per channel needs two)")


def quantize_int8(source, target, calibration_images):
    """`target`: static post-training quantization of the network-only ONNX model at `source`
    (QDQ, per-channel int8 weights, int8 activations), calibrated on `calibration_images`
    (normalised training images). self_contained() then puts the fp32 normalisation in front."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = Path(target).with_suffix(".prepared.onnx")
    try:
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        with per_tensor_said_once():
            quantize_static(str(prepared), str(target) + ".tmp", CalibrationImages(calibration_images),
                            quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    os.replace(str(target) + ".tmp", target)
    return Path(target)


def deployment(folder, model, splits, quantize=None, min_seconds=0.3, about=None):
    """What an edge deployment of the run in `folder` pays: model.onnx, self-contained (raw
    pixels in, the normalisation and `describe(splits, **about)` inside), checked in ONNX
    Runtime against `model`, its bytes and one-thread latency beside TorchScript's (none where
    min_seconds is None: another run of the same architecture times it); with
    quantize="int8" the same for model.int8.onnx, the network quantized (calibrated on training
    images only) with the same normalisation in front. Each file's test accuracy goes into its
    metadata. A step that fails is recorded in "export_errors" (one line each), never raised:
    the trained run is kept either way."""
    found, errors = {}, []
    network, quantized = folder / "network.onnx", folder / "network.int8.onnx"
    metadata = describe(splits, **(about or {}))
    try:
        try:
            export_network(folder / "model.ts", network, splits.normalise(splits.val[0][:2]))
            path = self_contained(network, folder / "model.onnx", splits.normalisation, metadata)
            found["onnx"] = check_onnx(path, model, splits) | ({} if min_seconds is None else latency(
                path, splits.test[0], splits.normalisation, min_seconds, torchscript=folder / "model.ts"))
            self_contained(path, path, None, {"test_acc": found["onnx"]["test_acc"]})
            found["onnx"]["bytes"] = path.stat().st_size
        except Exception as e:  # an op the exporter or the runtime cannot handle, for one
            errors.append(f"model.onnx: {first_line(e)}")
        if quantize == "int8" and "onnx" in found:
            try:
                quantize_int8(network, quantized, splits.normalise(splits.train[0][:CALIBRATION_IMAGES]))
                path = self_contained(quantized, folder / "model.int8.onnx", splits.normalisation, metadata)
                test_acc = ort_accuracy(ort_session(path), *splits.test, splits.normalisation)
                self_contained(path, path, None, {"test_acc": test_acc})
                found["int8"] = {"bytes": path.stat().st_size, "test_acc": test_acc,
                                 **({} if min_seconds is None else latency(path, splits.test[0], splits.normalisation,
                                                                          min_seconds))}
            except Exception as e:
                errors.append(f"model.int8.onnx: {first_line(e)}")
    finally:
        network.unlink(missing_ok=True), quantized.unlink(missing_ok=True)
    return found | ({"export_errors": errors} if errors else {})
