"""Reading files ahead of a load: whole files, skipping unreadable ones, stopping when told;
cold files only; files just written read back to be cached in 2 MB pages."""

from __future__ import annotations

import itertools
import mmap
import os
import re
from pathlib import Path

import pytest

from phi3_lsp import read_ahead as read_ahead_module
from phi3_lsp.read_ahead import (
    CACHED_PROBE_BYTES,
    CHUNK_BYTES,
    cache_again_in_large_pages,
    is_cached,
    read_ahead,
    read_ahead_if_cold,
    total_bytes,
)


def test_reads_every_file_to_its_end_past_one_that_is_missing(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"a" * (3 * CHUNK_BYTES))
    second.write_bytes(b"b" * (2 * CHUNK_BYTES + 1))
    chunks = itertools.count()
    assert read_ahead([first, tmp_path / "missing", second], lambda: next(chunks) >= 0)
    assert next(chunks) == 3 + 3  # asked after each chunk read


def test_stops_once_no_longer_wanted(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"c" * (10 * CHUNK_BYTES))
    chunks = itertools.count(1)
    assert not read_ahead([big, big], lambda: next(chunks) < 2)
    assert next(chunks) == 3  # asked twice: read two chunks of twenty


def test_the_size_of_files_counts_a_missing_one_as_nothing(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.write_bytes(b"d" * 1000)
    assert total_bytes([present, tmp_path / "missing", present]) == 2000


def written(path: Path, size: int, piece: int) -> Path:
    """`path` written `piece` bytes at a time, and on the disk."""
    with path.open("wb", buffering=0) as file:
        for offset in range(0, size, piece):
            file.write(bytes([offset // piece % 251]) * min(piece, size - offset))
        os.fsync(file.fileno())
    return path


def drop_from_page_cache(path: Path) -> None:
    with path.open("rb") as file:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def bytes_mapped_in_2_mb_pages(path: Path) -> int:
    """How much of `path` a fresh mapping of it, read through, maps in 2 MB pages."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        sum(mapped[offset] for offset in range(0, len(mapped), mmap.PAGESIZE))
        smaps = Path("/proc/self/smaps").read_text()
    field = re.search(r"FilePmdMapped:\s+(\d+) kB", smaps[smaps.index(str(path)) :])
    assert field is not None
    return int(field.group(1)) * 1024


linux_only = pytest.mark.skipif(
    not hasattr(os, "RWF_NOWAIT"), reason="reads that refuse to wait are Linux's"
)


@linux_only
def test_a_cold_file_is_read_ahead_and_a_cached_one_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cold = written(tmp_path / "cold", 3 * CACHED_PROBE_BYTES // 2, 1 << 20)
    drop_from_page_cache(cold)
    if is_cached(cold):
        pytest.skip("this filesystem keeps a file's pages when asked to drop them (tmpfs)")
    read_ahead_if_cold(cold)
    assert is_cached(cold) is True

    def refuse(path: Path) -> None:
        raise AssertionError("read a cached file again")

    monkeypatch.setattr(read_ahead_module, "_read_into_large_pages", refuse)
    read_ahead_if_cold(cold)
    assert is_cached(tmp_path / "missing") is None


@linux_only
def test_a_file_written_in_small_pieces_is_cached_again_in_2_mb_pages(tmp_path: Path) -> None:
    size = 8 << 20
    if bytes_mapped_in_2_mb_pages(written(tmp_path / "control", size, 2 << 20)) == 0:
        pytest.skip("this system does not cache files written in 2 MB pieces in 2 MB pages")
    layers = written(tmp_path / "layers", size, 4096)
    assert bytes_mapped_in_2_mb_pages(layers) == 0  # as written: the kernels read it slower
    cache_again_in_large_pages(layers)
    assert bytes_mapped_in_2_mb_pages(layers) == size
    assert layers.read_bytes() == written(tmp_path / "again", size, 4096).read_bytes()
