"""The trained model, saved for inference, what an edge deployment pays for it, and int8.

model.ts: a TorchScript trace of the trained model, which loads with torch alone (no
perforatedai). model_clean.pt: for dendritic runs the library's own cleaned model
(`prepare_final_model`; unpickling it needs perforatedai), for plain runs the model itself.
torch.export fails on the library's modules, and the cleaned model can differ from the
trained one (perforatedai 3.2.9 drops the dendrites of a layer with exactly one dendrite
set), so the trace is taken from the trained model and the difference is measured.

model.onnx: the same trace through the TorchScript-based ONNX exporter (dynamo=False; the
dynamo exporter fails on the library's modules, see docs/usage.md), with a dynamic batch
dimension, checked in ONNX Runtime against PyTorch. model.int8.onnx: ONNX Runtime's static
post-training quantization (QDQ, per-channel int8 weights, int8 activations) calibrated on
training images. Latency is measured where an edge device runs it: ONNX Runtime on one CPU
thread, next to TorchScript on one thread, in the same process.
"""

import json
import os
import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch

from .errors import first_line

ONNX_OPSET = 17
CALIBRATION_IMAGES = 512  # training images int8 calibration sees (never validation or test)
TOLERANCE = 1e-4  # largest logit difference between ONNX Runtime and PyTorch that is float rounding


@contextmanager
def torchscript_quietly():
    """TorchScript is deprecated upstream and says so on every use; it works here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # The library's forward branches on tensors that are fixed once training is over;
        # the trace records one branch (checked below against the model's own outputs).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def export(folder, model, clean, images, classes=None):
    """Write <folder>/model_clean.pt and <folder>/model.ts (with the class names, if any, as its
    extra file classes.json); return how far apart the cleaned model's logits are from the
    trained model's on `images`."""
    model.eval(), clean.eval()
    with torch.no_grad():
        difference = (clean(images) - model(images)).abs().max().item()
    torch.save(clean, folder / "model_clean.pt")
    with torchscript_quietly():
        traced = torch.jit.trace(model, images[:2], check_trace=False)
        with torch.no_grad():
            torch.testing.assert_close(traced(images), model(images))
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

def export_onnx(folder, images, classes=None):
    """<folder>/model.onnx from <folder>/model.ts, batch dimension dynamic; the class names, if
    any, in its metadata ("classes", JSON)."""
    traced = load_torchscript(folder / "model.ts")
    with torchscript_quietly(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter's notice
        warnings.filterwarnings("ignore", "no signature found")  # it reads a traced module's inputs from `images`
        torch.onnx.export(traced, (images[:2].cpu(),), str(folder / "model.onnx.tmp"), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    if classes:
        import onnx

        exported = onnx.load(str(folder / "model.onnx.tmp"))
        onnx.helper.set_model_props(exported, {"classes": json.dumps(classes)})
        onnx.save(exported, str(folder / "model.onnx.tmp"))
    os.replace(folder / "model.onnx.tmp", folder / "model.onnx")
    return folder / "model.onnx"


def ort_session(path, threads=1):
    """An ONNX Runtime session on the CPU with `threads` threads (1: an edge core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_logits(session, images, batch_size=1024):
    x = images.cpu().numpy()
    return np.concatenate([session.run(None, {"images": x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)])


def ort_accuracy(session, images, labels):
    return 100.0 * float((ort_logits(session, images).argmax(1) == labels.cpu().numpy()).mean())


def check_onnx(path, model, splits):
    """How model.onnx in ONNX Runtime compares with the trained model: the largest logit
    difference on the validation images, and its test accuracy."""
    session = ort_session(path)
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device  # the model may be on a GPU
    with torch.no_grad():
        reference = torch.cat([model(x.to(device)).cpu() for x in splits.val[0].split(1024)]).float().numpy()
    difference = float(np.abs(ort_logits(session, splits.val[0]) - reference).max())
    return {"bytes": path.stat().st_size, "max_logit_difference": difference,
            "within_tolerance": difference <= TOLERANCE, "test_acc": ort_accuracy(session, *splits.test)}


def latency(path, images, min_seconds=0.3, torchscript=None):
    """One-thread milliseconds per forward pass at batch 1 and 256: ONNX Runtime, and the
    TorchScript model beside it when given."""
    session, x = ort_session(path), images.cpu()
    times = {"ort_ms": median_ms(lambda b: session.run(None, {"images": b}), x.numpy(), min_seconds=min_seconds)}
    if torchscript is not None:
        model = load_torchscript(torchscript)
        with torch_threads(1), torch.no_grad():
            times["torchscript_ms"] = median_ms(model, x, min_seconds=min_seconds)
    return times


class CalibrationImages:
    """ONNX Runtime's calibration reader over `images` (training images only), in batches."""

    def __init__(self, images, batch_size=64):
        self.batches = iter([{"images": images[i:i + batch_size].cpu().numpy()}
                             for i in range(0, len(images), batch_size)])

    def get_next(self):
        return next(self.batches, None)


def quantize_int8(folder, calibration_images):
    """<folder>/model.int8.onnx: static post-training quantization of model.onnx (QDQ,
    per-channel int8 weights, int8 activations), calibrated on `calibration_images`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = folder / "model.prepared.onnx"
    try:
        quant_pre_process(str(folder / "model.onnx"), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(folder / "model.int8.onnx.tmp"), CalibrationImages(calibration_images),
                        quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    os.replace(folder / "model.int8.onnx.tmp", folder / "model.int8.onnx")
    return folder / "model.int8.onnx"


def deployment(folder, model, splits, quantize=None, min_seconds=0.3):
    """What an edge deployment of the run in `folder` pays: model.onnx checked in ONNX Runtime
    against `model`, its bytes and one-thread latency beside TorchScript's; with
    quantize="int8" the same for model.int8.onnx, calibrated on training images only. A step
    that fails is recorded in "export_errors" (one line each), never raised: the trained run
    is kept either way."""
    found, errors = {}, []
    try:
        path = export_onnx(folder, splits.val[0], splits.classes)
        found["onnx"] = check_onnx(path, model, splits) | latency(path, splits.test[0], min_seconds,
                                                                   torchscript=folder / "model.ts")
    except Exception as e:  # an op the exporter or the runtime cannot handle, for one
        errors.append(f"model.onnx: {first_line(e)}")
    if quantize == "int8" and "onnx" in found:
        try:
            path = quantize_int8(folder, splits.train[0][:CALIBRATION_IMAGES])
            found["int8"] = {"bytes": path.stat().st_size, "test_acc": ort_accuracy(ort_session(path), *splits.test),
                             **latency(path, splits.test[0], min_seconds)}
        except Exception as e:
            errors.append(f"model.int8.onnx: {first_line(e)}")
    return found | ({"export_errors": errors} if errors else {})
