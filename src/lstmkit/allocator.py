"""Keep freed memory for reuse instead of handing it back to the system (glibc's malloc).

A training step allocates and frees the same large buffers every time: a layer's saved gates, its input
projection, their gradients (tens of MB at a character model's shape). glibc serves such blocks with
``mmap`` and returns them to the system when freed (``munmap``, or trimming the heap's top), so every step
faults every page of them in again and the kernel zeroes it: a quarter of a bf16 training step of the
character model went to page faults. :func:`keep_freed_memory` raises glibc's two thresholds, so that
blocks up to 32 MB come from the heap and stay there once freed (the process keeps its peak memory
instead of giving it back between steps). Measured on a 2-vCPU Xeon with AMX, bf16 autocast, one step of
the character model (layer-norm LSTM 512, batch 64 x 50): median 86-90 ms before, 50-55 ms after.

PyTorch's CPU performance guides recommend jemalloc or tcmalloc for the same reason; this gets glibc most
of the way without preloading a library. The ``lstmkit`` command calls it at start-up; a program of
one's own can call it once, before training.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on a 64-bit system: blocks above still use mmap
TRIM_THRESHOLD = 1 << 30  # free memory kept at the heap's top before glibc gives it back


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks of up to 32 MB for reuse (see the module's docstring); ``True`` where
    it took the settings, ``False`` off Linux or without glibc's ``mallopt`` (nothing changes there).

    >>> import lstmkit
    >>> lstmkit.keep_freed_memory() in (True, False)
    True
    """
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
