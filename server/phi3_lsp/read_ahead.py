"""Reading files into the operating system's page cache before a load maps them.

A load that maps a file from a cold disk waits on it page by page, on the thread that loads
(the model thread, where completions run too). Read through once on another thread, which
waits on the disk without holding the GIL, the same load then maps pages already in memory:
Phi-3-mini-sized 4-bit layers (2.3 GB), cold, took 5.8 s to load and 0.3 s once read ahead
(the read itself: 5.0 s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

READ_AHEAD_FROM_BYTES = 256 << 20
"""Files smaller than this (SmolLM2's 4-bit layers: 82 MB) are better left to the load: from a
cold disk they take < 0.6 s (0.47 GB/s measured here), and nothing runs without them meanwhile."""

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
