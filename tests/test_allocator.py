"""neuroshrink/allocator.py: a buffer the size of an activation comes from the heap, and the
memory a step frees is reused by the next step instead of being faulted in from the kernel again."""

import subprocess
import sys
import sysconfig

import pytest

from conftest import ROOT

# In a process of its own (nothing allocated before decides): 20 MB allocated, written and freed
# four times, as a training step does with an activation; how much of it glibc had mapped, and the
# pages each round faulted in.
STEPS = """
import ctypes, ctypes.util, resource, sys
from neuroshrink import allocator
took = allocator.keep_freed_memory() if sys.argv[1] == "kept" else None
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
size, mapped, faults = 20 << 20, [], []
for step in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = libc.malloc(size)
    libc.memset(buffer, 1, size)
    mapped.append(libc.mallinfo2().hblkhd >= size)
    libc.free(buffer)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(took, mapped[0], *faults)
"""

GLIBC = sys.platform.startswith("linux") and "gnu" in (sysconfig.get_config_var("HOST_GNU_TYPE") or "")


def steps(mode):
    done = subprocess.run([sys.executable, "-c", STEPS, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    took, mapped, *faults = done.stdout.split()
    return took, mapped == "True", [int(n) for n in faults]


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's (Linux)")
def test_an_activation_comes_from_the_heap_and_its_pages_are_reused():
    took, mapped, faults = steps("kept")
    assert took == "True"
    assert not mapped and faults[0] >= 4_000, faults  # from the heap, its 5,120 pages faulted in once,
    assert sum(faults[1:]) < 100, faults  # and kept for the next step: nothing faulted in again
    _, mapped, faults = steps("default")
    assert mapped and faults[1] >= 4_000, faults  # glibc's own: mapped, and fresh pages again next time
