"""Giving back the pages of a checkpoint's mapping that no tensor reads any more.

transformers maps a safetensors checkpoint and its tensors are views of that mapping: a weight
read once stays resident in the process (as file pages, counted in its resident memory) for as
long as the mapping lives, which is as long as any tensor of the file. Where a weight is read
once and replaced (`fp32_products.hold_as_blocks`), `FilePages.release` unmaps its pages from the
process; the file stays in the page cache, which the system reclaims as it needs.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
from pathlib import Path
from typing import Any

import torch

_MADV_DONTNEED = 4  # from Linux's mman-common.h (the same value on every architecture it has)


class FilePages:
    """Gives back the pages of tensors, one after the other, by this process's mappings of files
    as Linux's maps list them when the first is given back (read once)."""

    def __init__(self) -> None:
        self._mappings: list[tuple[int, int]] | None = None

    def release(self, tensor: torch.Tensor) -> int:
        """Unmap from this process the whole pages that the tensor's bytes cover, where they are
        a file's mapping (never anonymous memory, whose contents that would lose); returns how
        many bytes. The tensor must not be read again: a read would fault its pages back from
        the file, without any change made to them in memory. Nothing where Linux's maps are not
        to be read."""
        if self._mappings is None:
            self._mappings = _file_mappings()
        page = mmap.PAGESIZE
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        first, last = -(-start // page) * page, end // page * page  # whole pages only
        in_a_file = any(low <= first and last <= high for low, high in self._mappings)
        if first < last and in_a_file and _madvise()(first, last - first, _MADV_DONTNEED) == 0:
            return last - first
        return 0


@functools.cache
def _madvise() -> Any:
    """libc's madvise(address, length, advice)."""
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def _file_mappings() -> list[tuple[int, int]]:
    """The address ranges of this process's mappings of files (a path, an inode), per Linux's
    /proc/self/maps; none where it cannot be read."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        # address perms offset device inode [path]
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/"):
            low, _, high = fields[0].partition("-")
            ranges.append((int(low, 16), int(high, 16)))
    return ranges
