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
from collections.abc import Iterable
from pathlib import Path

import torch

_MADV_DONTNEED = 4  # from Linux's mman-common.h (the same value on every architecture it has)


def release_file_pages(tensors: Iterable[torch.Tensor]) -> int:
    """Unmap from this process the whole pages that each tensor's bytes cover, where they are a
    file's mapping (never anonymous memory, whose contents that would lose); returns how many
    bytes. The tensors must not be read again: a read would fault their pages back from the
    file, without any change made to them in memory. Nothing where Linux's maps are not to be
    read."""
    tensors = list(tensors)
    mappings = _file_mappings() if tensors else []
    if not mappings:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    page, released = mmap.PAGESIZE, 0
    for tensor in tensors:
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        first, last = -(-start // page) * page, end // page * page  # whole pages only
        in_a_file = any(low <= first and last <= high for low, high in mappings)
        if first < last and in_a_file and libc.madvise(first, last - first, _MADV_DONTNEED) == 0:
            released += last - first
    return released


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
