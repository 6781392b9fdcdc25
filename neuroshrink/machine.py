"""What machine a run was measured on, and its limit: every time a run records names the CPU,
because its model changes from machine to machine here and the same run can take 1.7x longer
on one."""

import time
from pathlib import Path

import torch


def cpu_name():
    """The CPU's model name, and ", AMX" where it has AMX (bf16 matrix products several times fp32's)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    return (names[0] if names else "unknown") + (", AMX" if "amx_bf16" in info else "")


def today():
    return time.strftime("%Y-%m-%d")


def matmul_gflops(dtype=torch.float32, n=1024, seconds=1.0):
    """GFLOP/s of an n x n matrix product in `dtype` on the CPU, at least `seconds` of them:
    the rate its kernels reach at best, the limit a training step is measured against."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    steps, start = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - start < seconds:
        a @ b
        steps += 1
    return 2 * n ** 3 * steps / (time.perf_counter() - start) / 1e9
