"""glibc's allocator told to keep freed memory for reuse instead of handing it back to the system at once.

Why: a CPU training step of the tiny profile allocates and frees tensors of a few MB dozens of times (an
instruction-tuning micro-batch's frame features alone are 32 x 8 x 81 x 64 floats, 5.3 MB, and each elementwise op
on them makes another). With glibc's defaults, freed memory at the top of the heap is returned once more than
about twice the largest recent block is free, so the next step faults every page in again. Allocations below
`MMAP_THRESHOLD` come from the heap, and up to `TRIM_THRESHOLD` of free memory stays there. Only where memory comes
from changes, never a computed value: training writes the same bytes (docs/timings.md).
"""
from __future__ import annotations

import ctypes
import os

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest on 64-bit; larger blocks are still mapped and unmapped
TRIM_THRESHOLD = 256 * 1024 * 1024  # free memory a process keeps at most at its heap's top


# glibc's own ways of setting these for a process; where one is set, it wins and nothing here is changed
ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold")


def keep_freed_memory() -> bool:
    """Set the two thresholds for this process. False, with nothing changed, where the environment already sets
    either (glibc's variables or tunables), or where the C library has no working mallopt (not glibc)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(os.environ.get(var) for var in ENVIRONMENT) or any(t in tunables for t in TUNABLES):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
