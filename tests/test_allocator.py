"""neuroshrink/allocator.py: the memory a training step frees is reused by the next step, not
faulted in from the kernel again."""

import subprocess
import sys
import sysconfig

import pytest

from conftest import ROOT

# A training step whose activation (64 x 32 x 64 x 64 floats, 33.5 MB) is above the 32 MB that
# glibc's own threshold can reach: by default it comes from fresh pages, and faults, every step.
STEPS = """
import resource, sys
import torch
from neuroshrink import allocator
took = allocator.keep_freed_memory() if sys.argv[1] == "kept" else None
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(32, 10))
x, y = torch.randn(64, 1, 64, 64), torch.randint(0, 10, (64,))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
faults = []
for step in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(took, *faults)
"""


GLIBC = sys.platform.startswith("linux") and "gnu" in (sysconfig.get_config_var("HOST_GNU_TYPE") or "")


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's (Linux)")
def test_a_training_step_reuses_the_memory_the_last_one_freed():
    # both at once, in processes of their own: nothing this process allocated before decides
    steps = {mode: subprocess.Popen([sys.executable, "-c", STEPS, mode], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for mode in ("kept", "default")}
    printed = {mode: step.communicate()[0].split() for mode, step in steps.items()}
    assert all(step.returncode == 0 for step in steps.values())
    (took, *kept), (_, *default) = printed["kept"], printed["default"]
    kept, default = [int(n) for n in kept[2:]], [int(n) for n in default[2:]]  # after two steps of warm-up
    assert took == "True"
    assert min(default) > 16_384, default  # the activation's 8,192 pages and its gradient's, every step
    # Kept: most steps fault nothing. The heap still grows now and then (glibc's aligned allocations
    # ask for a little more than the block they freed), less and less often as it settles.
    assert sum(kept) < sum(default) / 4, (kept, default)
