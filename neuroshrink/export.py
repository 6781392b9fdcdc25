"""The trained model, saved for inference, and how fast it runs.

model.ts: a TorchScript trace of the trained model, which loads with torch alone (no
perforatedai). model_clean.pt: for dendritic runs the library's own cleaned model
(`prepare_final_model`; unpickling it needs perforatedai), for plain runs the model itself.
torch.export fails on the library's modules, and the cleaned model can differ from the
trained one (perforatedai 3.2.9 drops the dendrites of a layer with exactly one dendrite
set), so the trace is taken from the trained model and the difference is measured.
"""

import os
import time
import warnings
from contextlib import contextmanager

import torch


@contextmanager
def torchscript_quietly():
    """TorchScript is deprecated upstream and says so on every use; it works here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # The library's forward branches on tensors that are fixed once training is over;
        # the trace records one branch (checked below against the model's own outputs).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def export(folder, model, clean, images):
    """Write <folder>/model_clean.pt and <folder>/model.ts; return how far apart the cleaned
    model's logits are from the trained model's on `images`."""
    model.eval(), clean.eval()
    with torch.no_grad():
        difference = (clean(images) - model(images)).abs().max().item()
    torch.save(clean, folder / "model_clean.pt")
    with torchscript_quietly():
        traced = torch.jit.trace(model, images[:2], check_trace=False)
        with torch.no_grad():
            torch.testing.assert_close(traced(images), model(images))
    traced.save(str(folder / "model.ts.tmp"))
    os.replace(folder / "model.ts.tmp", folder / "model.ts")  # never half a file
    if difference > 1e-4:
        print(f"warning: the library's cleaned model (model_clean.pt) differs from the trained "
              f"model by up to {difference:.3g} in its logits; model.ts is the trained model")
    return difference


def load_torchscript(path, device="cpu"):
    with torchscript_quietly():
        return torch.jit.load(str(path), map_location=device).eval()


def inference_ms(path, images, batch_sizes=(1, 256), min_seconds=0.3):
    """Median milliseconds per forward pass of the TorchScript model at `path` on the CPU, per
    batch size (batches from `images`), after a warm-up; repeated for at least `min_seconds`."""
    model = load_torchscript(path)
    times = {}
    with torch.no_grad():
        for size in batch_sizes:
            batch = images[:size].cpu()
            for _ in range(3):
                model(batch)
            samples, start = [], time.perf_counter()
            while time.perf_counter() - start < min_seconds or len(samples) < 5:
                t0 = time.perf_counter()
                model(batch)
                samples.append(time.perf_counter() - t0)
            times[str(size)] = 1000 * sorted(samples)[len(samples) // 2]
    return times
