"""The C allocator of a ``ferstudy`` process, set to keep the memory TensorFlow frees.

By default glibc's ``malloc`` serves a large block with its own ``mmap`` and unmaps it when
freed, and gives each thread an arena whose freed top it trims back to the kernel. TensorFlow
allocates and frees its large tensors every batch, so each batch page-faults the same memory
in again: on a 2-core machine the kernel's share can outgrow the arithmetic
(docs/performance.md, "The allocator"). One arena that never trims nor maps blocks of its own
keeps that memory for the next batch. Results are bit-identical either way.
"""

from __future__ import annotations

import ctypes
import os

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
#: Set ``FERSTUDY_ALLOCATOR=system`` to leave the C library's defaults.
ENV = "FERSTUDY_ALLOCATOR"


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse: one arena, no trimming, no
    ``mmap``-ed blocks. Call it before TensorFlow starts its threads. False where the C
    library is not glibc, or where ``FERSTUDY_ALLOCATOR=system`` asks for its defaults."""
    if os.environ.get(ENV) == "system":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (glibc only)
    except (OSError, AttributeError):
        return False
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
    return all(mallopt(option, value) == 1 for option, value in settings)
