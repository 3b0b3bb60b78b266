"""int4 layers are made once per checkpoint and read back from the cache afterwards."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from model_sources import folder_source
from phi3_lsp import int4_cache
from phi3_lsp.engine import ModelEngine
from phi3_lsp.int4_cache import TENSORS_FILE, int4_entry
from phi3_lsp.int4_weights import Int4Weight
from phi3_lsp.paths import MANIFEST, is_built
from phi3_lsp.progress import ProgressUpdate
from phi3_lsp.quantize import int4_tensors


def load_int4(folder: Path) -> ModelEngine:
    return ModelEngine.load(folder_source(folder, weights=True), weights="int4")


def greedy_ids(engine: ModelEngine) -> tuple[int, ...]:
    prompt = engine.tokenizer.encode_prompt("The capital of France is")
    return engine.generate(prompt, max_new_tokens=8).token_ids


@pytest.fixture
def checkpoint(tmp_path: Path, tiny_phi3_dir: Path) -> Path:
    """A checkpoint of its own, so the tests can change it and own its cache entry."""
    return Path(shutil.copytree(tiny_phi3_dir, tmp_path / "tiny-phi3"))


def test_a_second_load_reads_the_layers_instead_of_quantizing(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_int4(checkpoint)
    assert is_built(int4_entry(checkpoint))

    def refuse(weight: torch.Tensor) -> Int4Weight:
        raise AssertionError("quantized again instead of reading the cache")

    monkeypatch.setattr(Int4Weight, "quantize", refuse)
    second = load_int4(checkpoint)
    stored, read = int4_tensors(first.model), int4_tensors(second.model)
    assert stored.keys() == read.keys()
    assert all(torch.equal(stored[name], read[name]) for name in stored)
    assert greedy_ids(second) == greedy_ids(first)
    assert second.architecture().repr == first.architecture().repr


def test_made_layers_are_read_back_into_2_mb_pages_and_cold_ones_read_ahead(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cached in 4 KB pages, as written or as a cold load faults them in, Phi-3-mini-sized
    # 4-bit decode passes took 126-128 ms against 110-112 ms in 2 MB pages (see `read_ahead`).
    cached_again: list[Path] = []
    read_if_cold: list[Path] = []
    monkeypatch.setattr(int4_cache, "cache_again_in_large_pages", cached_again.append)
    monkeypatch.setattr(int4_cache, "read_ahead_if_cold", read_if_cold.append)
    layers = int4_entry(checkpoint) / TENSORS_FILE
    load_int4(checkpoint)
    assert (cached_again, read_if_cold) == ([layers], [layers])
    load_int4(checkpoint)
    assert (cached_again, read_if_cold) == ([layers], [layers, layers])


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's memory map")
def test_the_load_that_makes_the_layers_maps_them_from_the_cache_as_later_loads_do(
    checkpoint: Path,
) -> None:
    # The made ones were private memory in 4 KB pages (Phi-3-mini-sized: 2.2 GB, decode
    # passes ~125 ms against ~111 ms from the file).
    engine = load_int4(checkpoint)
    mapped = mappings_of(int4_entry(checkpoint) / TENSORS_FILE)
    tensors = int4_tensors(engine.model)
    assert tensors and all(any(t.data_ptr() in m for m in mapped) for t in tensors.values())


def mappings_of(path: Path) -> list[range]:
    """The addresses at which this process maps `path` (Linux's /proc/self/maps)."""
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if fields[-1] == str(path):
            start, end = fields[0].split("-")
            mapped.append(range(int(start, 16), int(end, 16)))
    return mapped


def test_a_load_while_another_process_makes_the_layers_waits_and_reads_theirs(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two editor windows opened at once, or `phi3-lsp quantize` beside a server: each made the
    # same layers (Phi-3-mini's: 35-50 s of a core), one process's then thrown away.
    first = load_int4(checkpoint)
    entry = int4_entry(checkpoint)
    theirs = entry.rename(tmp_path / "made-by-the-other-process")

    def refuse(weight: torch.Tensor) -> Int4Weight:
        raise AssertionError("quantized while another process made the same layers")

    monkeypatch.setattr(Int4Weight, "quantize", refuse)
    told = threading.Event()

    def report(update: ProgressUpdate) -> None:
        if update.message.endswith("Waiting for another phi3-lsp process to make its 4-bit layers"):
            told.set()

    source = folder_source(checkpoint, weights=True)
    with ThreadPoolExecutor(1) as loader:
        with FileLock(str(entry.parent / f".{entry.name}.lock")):  # the other process's build
            loading = loader.submit(ModelEngine.load, source, progress=report, weights="int4")
            assert told.wait(60), "it says what it waits for"
            theirs.rename(entry)  # the other process's layers, made
        second = loading.result(timeout=60)
    assert greedy_ids(second) == greedy_ids(first)


def test_a_changed_checkpoint_gets_layers_of_its_own(checkpoint: Path) -> None:
    before = int4_entry(checkpoint)
    weights = next(checkpoint.glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert int4_entry(checkpoint) != before


def test_new_layers_replace_those_of_an_earlier_checkpoint_state_only(
    checkpoint: Path, tmp_path: Path
) -> None:
    load_int4(checkpoint)
    earlier = int4_entry(checkpoint)
    weights = str(checkpoint.resolve())
    (tmp_path / "other").mkdir()
    # Entries that must stay: another CPU code path's (a cache shared by several machines)
    # and another checkpoint's.
    kept = {
        earlier.parent / "tiny-phi3-other-cpu": {"weights": weights, "cpu": "another code path"},
        earlier.parent / "other-checkpoint": {"weights": str(tmp_path / "other"), "cpu": "AVX2"},
    }
    for entry, manifest in kept.items():
        entry.mkdir()
        (entry / MANIFEST).write_text(json.dumps(manifest))
    changed = next(checkpoint.glob("*.safetensors"))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    load_int4(checkpoint)
    assert is_built(int4_entry(checkpoint))
    assert not earlier.exists()
    assert all(is_built(entry) for entry in kept)


def test_new_layers_remove_those_of_checkpoints_that_are_gone(
    checkpoint: Path, tmp_path: Path, tiny_phi3_dir: Path
) -> None:
    gone = Path(shutil.copytree(tiny_phi3_dir, tmp_path / "deleted-later"))
    load_int4(gone)
    gone_entry = int4_entry(gone)
    shutil.rmtree(gone)
    assert is_built(gone_entry)

    load_int4(checkpoint)
    assert is_built(int4_entry(checkpoint))
    assert not gone_entry.exists()


ANOTHER_TORCH = "2.5.1+cpu"
"""The torch version of another install sharing the cache (a project's environment beside a
tool's own)."""


@contextmanager
def another_torch_install(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Within the block, this process makes and reads 4-bit layers as an install of phi3-lsp
    with `ANOTHER_TORCH` would."""
    with monkeypatch.context() as other_install:
        other_install.setattr(torch, "__version__", ANOTHER_TORCH)
        yield


def test_layers_of_another_torch_install_stay_while_it_reads_them(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two installs with different torch versions sharing the cache deleted each other's layers
    # on every start (Phi-3-mini: 2.3 GB, ~40 s to make again).
    with another_torch_install(monkeypatch):
        load_int4(checkpoint)
        theirs = int4_entry(checkpoint)
    load_int4(checkpoint)
    ours = int4_entry(checkpoint)
    assert ours != theirs

    def refuse(weight: torch.Tensor) -> Int4Weight:
        raise AssertionError("quantized again instead of reading the cache")

    monkeypatch.setattr(Int4Weight, "quantize", refuse)
    with another_torch_install(monkeypatch):
        load_int4(checkpoint)
    load_int4(checkpoint)
    assert is_built(ours) and is_built(theirs)


def unread_for_weeks(entry: Path, weeks: int) -> None:
    """As if `entry` was made `weeks` ago and not read since."""
    then = time.time() - weeks * 7 * 24 * 3600
    os.utime(entry, (then, then))


def test_layers_another_torch_install_made_long_ago_stay_while_it_reads_them(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with another_torch_install(monkeypatch):
        load_int4(checkpoint)
        theirs = int4_entry(checkpoint)
        unread_for_weeks(theirs, 5)
        load_int4(checkpoint)  # a start of the other install: it reads them
    load_int4(checkpoint)
    assert is_built(int4_entry(checkpoint))
    assert is_built(theirs)


@pytest.mark.parametrize("ours", ["made", "read"])
def test_layers_of_a_torch_since_upgraded_go_once_unread_for_weeks(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, ours: str
) -> None:
    # After an upgrade of torch, nothing reads the earlier version's layers (Phi-3-mini's:
    # 2.3 GB); the new version's are made once, then read on every start.
    if ours == "read":
        load_int4(checkpoint)
    with another_torch_install(monkeypatch):
        load_int4(checkpoint)
        earlier = int4_entry(checkpoint)
    unread_for_weeks(earlier, 5)
    load_int4(checkpoint)
    assert is_built(int4_entry(checkpoint))
    assert not earlier.exists()


def unread_for_hours(entry: Path, hours: int) -> None:
    """As if `entry` was made `hours` ago and not read since."""
    then = time.time() - hours * 3600
    os.utime(entry, (then, then))


@pytest.mark.parametrize("theirs_read", ["a day ago", "just now"])
def test_layers_another_torch_install_made_of_a_checkpoint_since_deleted_go_once_not_read(
    checkpoint: Path,
    tmp_path: Path,
    tiny_phi3_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    theirs_read: str,
) -> None:
    # Nothing reads them again, yet they stayed four weeks (Phi-3-mini's: 2.3 GB); unless the
    # other install is reading them at this moment, from the files it opened before.
    gone = Path(shutil.copytree(tiny_phi3_dir, tmp_path / "deleted-later"))
    with another_torch_install(monkeypatch):
        load_int4(gone)
        theirs = int4_entry(gone)
        unread_for_hours(theirs, 24)
        if theirs_read == "just now":
            load_int4(gone)
    shutil.rmtree(gone)

    load_int4(checkpoint)

    assert is_built(int4_entry(checkpoint))
    assert is_built(theirs) == (theirs_read == "just now")


def test_another_cpu_code_path_gets_layers_of_its_own(checkpoint: Path) -> None:
    # The packed layout differs between torch's CPU code paths (ATEN_CPU_CAPABILITY picks one).
    script = (
        "import sys; from pathlib import Path; from phi3_lsp.int4_cache import int4_entry; "
        "print(int4_entry(Path(sys.argv[1])))"
    )
    entries = {
        subprocess.run(
            [sys.executable, "-c", script, str(checkpoint)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "ATEN_CPU_CAPABILITY": capability},
        ).stdout
        for capability in ("default", "")
    }
    assert len(entries) == 2


def test_a_damaged_cache_entry_is_made_again(checkpoint: Path) -> None:
    expected = greedy_ids(load_int4(checkpoint))
    tensors = int4_entry(checkpoint) / TENSORS_FILE
    tensors.write_bytes(b"not safetensors")
    assert greedy_ids(load_int4(checkpoint)) == expected
    assert tensors.stat().st_size > 1000  # written again, whole


@pytest.mark.parametrize("damage", ["cut", "deleted"])
def test_layers_cut_short_or_deleted_are_made_again_and_the_log_says_which(
    checkpoint: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    # A power cut or a full disk after they were stored.
    expected = greedy_ids(load_int4(checkpoint))
    tensors = int4_entry(checkpoint) / TENSORS_FILE
    size = tensors.stat().st_size
    if damage == "cut":
        with tensors.open("r+b") as file:
            file.truncate(size // 2)
    else:
        tensors.unlink()

    with caplog.at_level(logging.WARNING):
        assert greedy_ids(load_int4(checkpoint)) == expected

    assert tensors.stat().st_size == size
    said = {
        "cut": f"{TENSORS_FILE} has {size // 2:,} bytes, expected {size:,}",
        "deleted": f"{TENSORS_FILE} is missing, expected {size:,} bytes",
    }[damage]
    assert f"is damaged ({said}): making it again" in caplog.text


def test_a_bf16_checkpoint_gets_its_layers_from_its_files_and_the_same_text(
    tiny_bf16_phi3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = Path(shutil.copytree(tiny_bf16_phi3_dir, tmp_path / "bf16"))
    from_files = load_int4(checkpoint)
    assert is_built(int4_entry(checkpoint))
    shutil.rmtree(int4_entry(checkpoint))
    # As before: quantizing the loaded model.
    monkeypatch.setattr(int4_cache, "int4_tensors_from_files", lambda *_: None)
    from_model = load_int4(checkpoint)
    made, read = int4_tensors(from_model.model), int4_tensors(from_files.model)
    assert made.keys() == read.keys()
    assert all(torch.equal(made[name], read[name]) for name in made)
    assert greedy_ids(from_files) == greedy_ids(from_model)


def test_a_checkpoint_that_cannot_be_read_fails_once_with_its_own_error(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Making the layers runs under the cache entry's lock, where a full disk is only logged:
    # an unreadable checkpoint must not pass for the cache's fault, nor be read a second time.
    reads: list[Path] = []

    def unreadable(shapes: object, weights_dir: Path) -> None:
        reads.append(weights_dir)
        raise OSError("Input/output error reading model.safetensors")

    monkeypatch.setattr(int4_cache, "int4_tensors_from_files", unreadable)
    with caplog.at_level(logging.WARNING), pytest.raises(OSError, match="Input/output error"):
        load_int4(checkpoint)
    assert len(reads) == 1
    assert "Could not keep the 4-bit layers" not in caplog.text
    assert not is_built(int4_entry(checkpoint))
