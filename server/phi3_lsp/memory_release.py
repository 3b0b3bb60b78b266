"""Give the memory of freed tensors back to the system.

glibc's malloc keeps what a program frees for its own reuse: once a large block has been
freed, it serves blocks of that size from its heaps, and freeing those does not shrink the
heaps. A server that has read long prompts would go on holding their keys and values after
their documents close (measured on SmolLM2 in fp32, resident memory of the server when ready,
after reading 4 documents of ~4,000 tokens, after closing them: 904, 1,843, 1,658 MiB; with
this release on closing: 904, 1,781, 911 MiB). `malloc_trim` hands the free pages of every
heap back; it costs ~0.15 s per 2 GB given back, and almost nothing when there is little to
give.
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


def release_freed_memory() -> None:
    """Return the C heap's free pages to the system, where the C library can."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
