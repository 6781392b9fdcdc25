"""What machine a run was measured on: every time a run records names it, because the CPU
model changes from machine to machine here and the same run can take 1.7x longer on one."""

import time
from pathlib import Path


def cpu_name():
    """The CPU's model name, and ", AMX" where it has AMX (bf16 matrix products several times fp32's)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    return (names[0] if names else "unknown") + (", AMX" if "amx_bf16" in info else "")


def today():
    return time.strftime("%Y-%m-%d")
