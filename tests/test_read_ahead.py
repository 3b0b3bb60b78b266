"""Reading files ahead of a load: whole files, skipping unreadable ones, stopping when told."""

from __future__ import annotations

import itertools
from pathlib import Path

from phi3_lsp.read_ahead import CHUNK_BYTES, read_ahead, total_bytes


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
