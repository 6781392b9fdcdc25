"""Mixed-precision training: which precisions a device can train in, autocast and loss scaling.

The weights stay fp32 (master weights); autocast runs the forward pass and the loss in the
lower precision where that is safe, op by op. fp16 needs its loss scaled so that small
gradients do not underflow; bf16 has fp32's range and needs no scaling. Each epoch's
evaluation runs in the training precision (it only ranks the epochs); a run's final evaluation
and its export are fp32, so the accuracies it reports are those of the exported fp32 model.
"""

import contextlib
import copy
import time

import torch
import torch.nn.functional as F

PRECISIONS = ("fp32", "bf16", "fp16")
CHOICES = ("auto", *PRECISIONS)
FASTER = 0.9  # auto takes a lower precision only if its training step took at most 90 % of fp32's
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def available(device):
    """The precisions this device trains in at full speed: bf16 where the hardware has it
    (a CPU with AVX512-BF16 or AMX, a CUDA GPU that supports it), fp16 on CUDA."""
    if device.type == "cuda":
        return ["fp32"] + (["bf16"] if torch.cuda.is_bf16_supported() else []) + ["fp16"]
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return ["fp32", "bf16"]
    return ["fp32"]


def measure(model, images, labels, device, batch_size, seconds=0.5, rounds=3):
    """Milliseconds per training step (forward, loss, backward) of a copy of `model` on one
    batch of `images`, in each precision this device trains in: the best of `rounds` rounds
    in which the precisions take turns, so that a busy moment of a shared machine does not
    decide alone. The copy's weights are never stepped; the model itself is not touched, nor
    the random numbers the run draws next (the copy's dropout draws from a forked stream):
    where auto chooses fp32, the run is the fp32 run."""
    best = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = copy.deepcopy(model).to(device).train()
        x, y = images[:batch_size].to(device), labels[:batch_size].to(device)
        amps = [Precision(name, device) for name in available(device)]
        for amp in amps:  # a warm-up step or two each
            steps(model, x, y, amp, device, 0, least=2)
        for _ in range(rounds):
            for amp in amps:
                ms = steps(model, x, y, amp, device, seconds / rounds)
                best[amp.name] = min(ms, best.get(amp.name, ms))
    return best


def steps(model, x, y, amp, device, seconds, least=3):
    """Milliseconds per step over at least `least` steps and `seconds`."""
    done, start = 0, time.perf_counter()
    while done < least or time.perf_counter() - start < seconds:
        with amp.autocast():
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        done += 1
    return 1000 * (time.perf_counter() - start) / done


def choose(times):
    """--precision auto: the fastest precision measured, if it took at most FASTER of fp32's
    time; otherwise fp32. fp16 only where bf16 is missing (it needs loss scaling, and bf16
    keeps fp32's range)."""
    lower = [name for name in ("bf16",) if name in times] or [name for name in ("fp16",) if name in times]
    best = min(lower, key=times.get, default=None)
    return best if best and times[best] <= FASTER * times["fp32"] else "fp32"


class Precision:
    """`with precision.autocast(): loss = ...`, then `precision.step(loss, optimizer)`."""

    def __init__(self, name, device):
        if name not in available(device):
            raise ValueError(f"--precision {name} is not available on {device.type} here; "
                             f"choose from {', '.join(available(device))}")
        self.name, self.device = name, device
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.name])

    def step(self, loss, optimizer):
        """Backward pass and optimizer step; with fp16, through the loss scaler."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()

    def state_dict(self):
        return {"scaler": self.scaler.state_dict()} if self.scaler else {}

    def load_state_dict(self, state):
        if self.scaler and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
