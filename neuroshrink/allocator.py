"""The C allocator set for training on the CPU: freed buffers kept for the next step.

A training step frees its activations and allocates the same sizes again in the next. glibc's
malloc (Linux) serves a buffer above its mmap threshold with fresh pages from the kernel and
hands them back when it is freed, so every step faults its activations in again. That
threshold starts at 128 kB and rises only when such a buffer is freed, so how fast a process
trained depended on what it had allocated before: reading a data set as float32 raised it,
reading it as uint8 did not, and its steps took thousands of page faults each. Fixing both
thresholds high keeps freed memory in the process for reuse, as PyTorch's CUDA caching
allocator, jemalloc and tcmalloc do (experiments.study_time measures the difference). Elsewhere
(macOS, Windows, another C library) nothing changes.
"""

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
# Buffers up to 32 MB come from the heap: the most glibc's own threshold can rise to, so a larger
# one is mapped as before (a one-off buffer, the data's, kept in the heap raised a run's peak
# memory by a fifth); up to 1 GB of freed heap is kept for reuse.
HEAP_BUFFERS = 32 << 20
KEPT_FREE = 1 << 30


@functools.cache
def keep_freed_memory():
    """Once per process: True where glibc took the settings, False where there is no glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no C library found, or not glibc's
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_BUFFERS)) and bool(mallopt(M_TRIM_THRESHOLD, KEPT_FREE))
