"""Reading files into the operating system's page cache before a load maps them.

A load that maps a file from a cold disk waits on it page by page, on the thread that loads
(the model thread, where completions run too). Read through once on another thread, which
waits on the disk without holding the GIL, the same load then maps pages already in memory:
Phi-3-mini-sized 4-bit layers (2.3 GB), cold, took 5.8 s to load and 0.3 s once read ahead
(the read itself: 5.0 s).

Read in one pass, a file is also cached in 2 MB pages where Linux can (ext4 and xfs of recent
kernels), and a mapping of it then takes 2 MB pages too. The 4-bit kernels, which read weights
from many places at once, miss the TLB less: Phi-3-mini-sized 4-bit decode passes took 110-112
ms over those pages against 126-128 ms over the same file cached in 4 KB pages (written in the
writer's small pieces, or faulted in by a load from a cold disk).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

READ_AHEAD_FROM_BYTES = 256 << 20
"""Files smaller than this (SmolLM2's 4-bit layers: 82 MB) are better left to the load: from a
cold disk they take < 0.6 s (0.47 GB/s measured here), and nothing runs without them meanwhile."""

CACHED_PROBE_BYTES = 32 << 20
"""`is_cached` asks for one page in each stretch of a file this long."""

CHUNK_BYTES = 1 << 20
"""Read into one small buffer again and again: the bytes are dropped, the page cache keeps them."""


def read_ahead(paths: Iterable[Path], keep_going: Callable[[], bool]) -> bool:
    """Read each of `paths` to its end; stops early, returning False, once `keep_going()` is
    False. A file that cannot be read is skipped: the load that needs it reports the error."""
    buffer = bytearray(CHUNK_BYTES)
    for path in paths:
        try:
            with path.open("rb", buffering=0) as file:
                while file.readinto(buffer):
                    if not keep_going():
                        return False
        except OSError as error:
            log.debug("Not read ahead: %s", error)
    return True


def total_bytes(paths: Iterable[Path]) -> int:
    """The size of `paths` together; a file that cannot be read counts nothing."""
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total


def is_cached(path: Path) -> bool | None:
    """Whether the page cache holds `path`, judged by one page in every `CACHED_PROBE_BYTES`;
    None where the system cannot say (reads that refuse to wait for the disk are Linux's) or
    the file cannot be read."""
    dont_wait = getattr(os, "RWF_NOWAIT", None)
    if dont_wait is None:
        return None
    page = bytearray(1)
    try:
        with path.open("rb", buffering=0) as file:
            size = os.fstat(file.fileno()).st_size
            for offset in range(0, size, CACHED_PROBE_BYTES):
                os.preadv(file.fileno(), [page], offset, dont_wait)
    except BlockingIOError:
        return False
    except OSError as error:  # gone, or a filesystem without such reads
        log.debug("Cannot tell whether %s is cached: %s", path, error)
        return None
    return True


def read_ahead_if_cold(path: Path) -> None:
    """Read `path` into 2 MB pages unless the page cache holds it: the disk is read either way,
    and a load that maps it cold would leave it cached in 4 KB pages. A cached file is left as
    it is (a read of it costs ~0.4 s a GB here)."""
    if is_cached(path) is False:
        _read_into_large_pages(path)


def cache_again_in_large_pages(path: Path) -> None:
    """Drop `path`, a file just written and on the disk, from the page cache and read it back
    into 2 MB pages: written in small pieces, it stays cached in 4 KB pages. It costs one read
    from the disk (Phi-3-mini-sized 4-bit layers, 2.3 GB: ~1-5 s here). Where the system
    cannot drop a file's pages, nothing is done."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        with path.open("rb", buffering=0) as file:
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError as error:
        log.debug("Not cached again: %s", error)
        return
    _read_into_large_pages(path)


_TOUCH_BYTES = 64 << 10
"""One byte in this many is touched: a fault reads the pages about it (Linux: 128 KB, or one
2 MB page where the mapping takes them)."""


def _read_into_large_pages(path: Path) -> None:
    """Read `path` through a mapping that asks for 2 MB pages: a fault in such a mapping reads
    the file a 2 MB page at a time where the system can (Linux's read-ahead of a sequential
    read() reaches 2 MB pages only some 30 MB into a file)."""
    try:
        with path.open("rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                return
            with mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapped:
                with contextlib.suppress(AttributeError, OSError):  # then read in 4 KB pages
                    mapped.madvise(mmap.MADV_HUGEPAGE)
                for offset in range(0, len(mapped), _TOUCH_BYTES):
                    mapped[offset]  # the touch is the read
    except (OSError, ValueError) as error:
        log.debug("Not read into 2 MB pages: %s", error)
