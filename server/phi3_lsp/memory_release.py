"""When glibc's malloc gives the memory of freed tensors back to the system.

glibc's malloc keeps what a program frees for its own reuse: once a large block has been
freed, it serves blocks of that size from its heaps, and freeing those does not shrink the
heaps. A server that has read long prompts would go on holding their keys and values after
their documents close (measured on SmolLM2 in fp32, resident memory of the server when ready,
after reading 4 documents of ~4,000 tokens, after closing them: 904, 1,843, 1,658 MiB; with
this release on closing: 904, 1,781, 911 MiB). `malloc_trim` hands the free pages of every
heap back; it costs ~0.15 s per 2 GB given back, and almost nothing when there is little to
give.

The opposite also costs: by default malloc maps every block of 32 MB or more on its own and
unmaps it when freed, and gives a heap's free top back as soon as it passes a threshold that
follows those sizes. A pass over a prompt allocates and frees the same large blocks in every
layer, and each time the system must hand out zeroed pages again: reading a 500-token prompt
into a Phi-3-mini-sized int4 model took 8.5-9.0 s, 6.4-6.8 s with large blocks kept for reuse.
`keep_freed_memory_for_reuse` keeps them, up to `KEPT_FOR_REUSE_BYTES`, until the next release.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl builds)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]  # a ctypes function


_MALLOC_TRIM = _find_malloc_trim()

KEPT_FOR_REUSE_BYTES = 512 << 20
"""Free memory at the top of a heap that malloc keeps rather than gives back: more than the
blocks a decoder layer allocates and frees over a 512-token prompt chunk (Phi-3-mini: ~100 MB)."""
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt's parameters, from glibc's malloc.h


def keep_freed_memory_for_reuse() -> None:
    """Make glibc's malloc serve large blocks from its heaps and keep freed ones for reuse
    (see above); `release_freed_memory` still gives them back. Nothing elsewhere."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(_M_MMAP_MAX, 0)  # where a heap cannot grow, malloc still maps memory
    mallopt(_M_TRIM_THRESHOLD, KEPT_FOR_REUSE_BYTES)


def release_freed_memory() -> None:
    """Return the C heap's free pages to the system, where the C library can."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
