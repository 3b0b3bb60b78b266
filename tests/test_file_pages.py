"""A tensor's pages of a file's mapping go back to the system; anonymous memory never does."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
import torch

from phi3_lsp.file_pages import FilePages
from resident_pages import resident_kb

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/smaps").exists(), reason="Linux's /proc tells which pages are resident"
)


def test_a_file_mapped_tensors_pages_are_given_back_and_read_again_alike(
    tmp_path: Path,
) -> None:
    values = torch.randn(4 << 20)  # 16 MB
    path = tmp_path / "weights.bin"
    path.write_bytes(values.numpy().tobytes())
    with path.open("rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_PRIVATE)
    tensor = torch.frombuffer(mapped, dtype=torch.float32)
    tensor.sum()  # every page read
    assert resident_kb(path) >= 16 << 10

    released = FilePages().release(tensor)

    assert released == 16 << 20
    assert resident_kb(path) < 1 << 10
    assert torch.equal(tensor, values)  # read again from the file
    del tensor
    mapped.close()


def test_only_whole_pages_within_the_tensor_are_given_back(tmp_path: Path) -> None:
    count = 1 << 20
    path = tmp_path / "weights.bin"
    path.write_bytes(torch.randn(count).numpy().tobytes())
    with path.open("rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, flags=mmap.MAP_PRIVATE)
    whole = torch.frombuffer(mapped, dtype=torch.float32)
    # Changed in this process's copy of the first and last pages only: lost if they went back.
    whole[0], whole[-1] = 1234.5, -1234.5
    # From 100 bytes into the first page to 100 bytes into the last.
    part = whole[25 : count - mmap.PAGESIZE // 4 + 25]

    assert FilePages().release(part) == 4 * count - 2 * mmap.PAGESIZE

    assert (whole[0].item(), whole[-1].item()) == (1234.5, -1234.5)
    del whole, part
    mapped.close()


def test_anonymous_memory_is_never_given_back() -> None:
    values = torch.randn(4 << 20)
    kept = values.clone()
    assert FilePages().release(values) == 0
    assert torch.equal(values, kept)
