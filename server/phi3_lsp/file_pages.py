"""Giving back the pages of a checkpoint's mapping that no tensor reads any more.

transformers maps a safetensors checkpoint and its tensors are views of that mapping: a weight
read once stays resident in the process (as file pages, counted in its resident memory) for as
long as the mapping lives, which is as long as any tensor of the file. Where a weight is read
once and replaced (`fp32_products.hold_as_q4_1`), `release_file_pages` unmaps its pages from the
process; the file stays in the page cache, which the system reclaims as it needs.
"""

from __future__ import annotations

import ctypes
import mmap
from pathlib import Path

import torch

_MADV_DONTNEED = 4  # from Linux's mman-common.h (the same value on every architecture it has)


def release_file_pages(tensor: torch.Tensor) -> int:
    """Unmap from this process the whole pages that `tensor`'s bytes cover, where they are a
    file's mapping (never anonymous memory, whose contents that would lose); returns how many
    bytes. The tensor must not be read again: a read would fault its pages back from the file,
    without any change made to them in memory. Nothing where Linux's maps are not to be read."""
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, end // page * page  # whole pages only
    if last <= first or not _in_a_file_mapping(first, last):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    return last - first if libc.madvise(first, last - first, _MADV_DONTNEED) == 0 else 0


def _in_a_file_mapping(start: int, end: int) -> bool:
    """Whether [start, end) lies within one mapping of a file (a path, an inode), per Linux's
    /proc/self/maps."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        # address perms offset device inode [path]
        fields = line.split(maxsplit=5)
        low, _, high = fields[0].partition("-")
        if int(low, 16) <= start and end <= int(high, 16):
            return len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/")
    return False
