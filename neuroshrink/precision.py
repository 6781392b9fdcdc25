"""Mixed-precision training: which precisions a device can train in, autocast and loss scaling.

The weights stay fp32 (master weights); autocast runs the forward pass and the loss in the
lower precision where that is safe, op by op. fp16 needs its loss scaled so that small
gradients do not underflow; bf16 has fp32's range and needs no scaling. Evaluation and
export stay in fp32, so the accuracies a run reports are those of the exported fp32 model.
"""

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def available(device):
    """The precisions this device trains in at full speed: bf16 where the hardware has it
    (a CPU with AVX512-BF16 or AMX, a CUDA GPU that supports it), fp16 on CUDA."""
    if device.type == "cuda":
        return ["fp32"] + (["bf16"] if torch.cuda.is_bf16_supported() else []) + ["fp16"]
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return ["fp32", "bf16"]
    return ["fp32"]


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
