"""Keep freed memory in the process (glibc): no page faults for every feature map.

An iteration allocates and frees the same large feature maps again and again. By
default glibc serves each allocation above a threshold with a fresh ``mmap`` and hands
it back on ``free``, so every iteration pays for page faults on hundreds of megabytes;
at 512 px on two CPU cores that was about a fifth of an iteration (BENCHMARKS.md). With
one arena, no ``mmap`` for allocations and no trimming, freed blocks are reused as they
are. The peak memory does not change; memory freed after the peak is not handed back to
the system until the process ends, which for a command-line run is soon.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

_done = False


def keep_freed_memory() -> bool:
    """Configure glibc's allocator as above; False where there is no glibc (nothing done).

    Call once, early, before large tensors are allocated.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another C library: leave it be
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(
        mallopt(param, value)
        for param, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
    )
    _done = ok
    return ok
