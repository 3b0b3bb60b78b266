"""Where phi3-lsp keeps what it downloads and converts, and how an entry is built there safely."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs
from filelock import FileLock, Timeout

from phi3_lsp.entry_files import FILES, damage, listed_files, replace_file, sync_folder, sync_tree
from phi3_lsp.errors import ModelSourceError

log = logging.getLogger(__name__)

CACHE_ENV = "PHI3_LSP_CACHE"
LOCK_CHECK_SECONDS = 0.1
"""How often a build waiting for another process's build of the same entry calls `waiting`."""
DEAD_BUILD_AFTER_SECONDS = 600.0
"""A build's staging folder unchanged for this long, its lock free, is taken to be dead."""
MANIFEST = "phi3-lsp.json"


class CacheNotWritableError(ModelSourceError, OSError):
    """The cache folder cannot be made or written. A `ModelSourceError` where the cache is
    needed (the offline pack: one line for the user); an `OSError` where it is only helpful,
    so that those paths go on without it as before (our kernels: torch's instead)."""


def cache_dir() -> Path:
    """The cache root: `$PHI3_LSP_CACHE`, else the user cache dir / phi3-lsp."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("phi3-lsp", appauthor=False))


def is_built(entry: Path) -> bool:
    """True when `entry` was completed by `build_once` (its manifest is written last) and each
    file its manifest lists is there with its size: a stat per file, no reading."""
    manifest = built_manifest(entry)
    return manifest is not None and damage(entry, manifest) is None


def build_once(
    entry: Path,
    build: Callable[[Path], object],
    manifest: dict[str, Any],
    *,
    waiting: Callable[[], object] = lambda: None,
) -> Path:
    """Create the cache folder `entry` with `build(staging)` unless it is already complete.

    Safe when several processes race (a file lock) and when a build fails or is killed:
    the work happens in a staging folder that is renamed into place only when complete and on
    the disk, so `entry` is either absent or whole. An entry found damaged since (see
    `_damage_of`) is said so in the log, removed and built again.

    While another process builds `entry` (a download or a conversion can take minutes),
    `waiting()` is called every `LOCK_CHECK_SECONDS`: to say so, and to give up by raising.
    """
    if is_built(entry):
        return entry
    try:
        lock = _held_lock(entry, waiting)
    except CacheNotWritableError as error:
        damaged = _damage_of(entry)
        if damaged is None:
            raise
        # Why a cache that holds the entry needs writing.
        raise CacheNotWritableError(
            f"The cache folder {entry} is damaged ({damaged}). {error}"
        ) from error
    try:
        if is_built(entry):
            return entry
        damaged = _damage_of(entry)
        if damaged is not None:
            log.warning("Cache folder %s is damaged (%s): making it again", entry, damaged)
        _remove_leftovers(entry)
        staging = entry.parent / f".{entry.name}.staging-{os.getpid()}"
        try:
            staging.mkdir()
            build(staging)
            _complete(staging, manifest)
            staging.rename(entry)
            sync_folder(entry.parent)
        except ModelSourceError as error:
            if damaged is None:
                raise
            raise ModelSourceError(
                f"The cache folder {entry} was damaged ({damaged}) and is removed, but it could "
                f"not be made again: {error}"
            ) from error
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.release()
    return entry


def wait_for_build(entry: Path, waiting: Callable[[], object]) -> None:
    """Return once no process builds `entry` (at once where none does), calling `waiting()`
    meanwhile as `build_once` does: for a caller that can use `entry`, but would build
    something smaller in its place."""
    if _lock_file(entry).exists():  # else never built here: nothing to wait for
        _held_lock(entry, waiting).release()


def rewrite_built_file(
    entry: Path, relative: str, rewrite: Callable[[bytes], bytes], mark: dict[str, Any]
) -> bool:
    """Give the file `relative` of the built `entry` the content `rewrite` makes of its own,
    and its manifest `mark` (and the file's new size), unless the manifest has `mark` already
    (another process did it first) or `entry` is not whole: True when it did.

    Under the entry's build lock, each file replaced at once (see `replace_file`), so that the
    entry stays built at every step, with no rebuild (for the offline pack: a download). Cut
    off between two steps (a crash, a file another process holds open on Windows), it is
    whole, without `mark`: the next call rewrites again, so `rewrite` must give its own result
    back unchanged. Raises `CacheNotWritableError` where the lock cannot be taken, `OSError`
    where a file cannot be replaced.
    """
    lock = _held_lock(entry)
    try:
        manifest = built_manifest(entry)
        if manifest is None or damage(entry, manifest) is not None:
            return False
        if all(manifest.get(field) == value for field, value in mark.items()):
            return False
        file = entry / relative
        content = file.read_bytes()
        rewritten = rewrite(content)
        files = manifest.get(FILES)
        if rewritten != content and isinstance(files, dict) and relative in files:
            # Unlisted while it is replaced: its size is not checked between the two writes.
            unlisted = {name: size for name, size in files.items() if name != relative}
            replace_file(entry / MANIFEST, _manifest_bytes({**manifest, FILES: unlisted}))
        if rewritten != content:
            replace_file(file, rewritten)
        if isinstance(files, dict):
            files = {**files, relative: len(rewritten)}
            manifest = {**manifest, FILES: files}
        replace_file(entry / MANIFEST, _manifest_bytes({**manifest, **mark}))
    finally:
        lock.release()
    return True


def _damage_of(entry: Path) -> str | None:
    """What is wrong with `entry`, a cache folder that `build_once` completed, in words; None
    when it is whole, or was never completed (a build not done is not damage)."""
    if not (entry / MANIFEST).is_file():
        return None
    manifest = built_manifest(entry)
    if manifest is None:
        return f"its manifest {MANIFEST} cannot be read"
    return damage(entry, manifest)


def _complete(staging: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest of the built `staging`, listing its files, and put all on the disk:
    the rename that follows makes it an entry."""
    files = listed_files(staging)
    (staging / MANIFEST).write_bytes(_manifest_bytes({**manifest, FILES: files}))
    sync_tree(staging)


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2) + "\n").encode()


def _held_lock(entry: Path, waiting: Callable[[], object] = lambda: None) -> FileLock:
    """The build lock of `entry`, acquired; `waiting()` is called while another process holds
    it (see `build_once`). A cache folder that cannot be made or written (`$PHI3_LSP_CACHE`
    naming a file, a read-only disk) is the user's to fix: one line."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(_lock_file(entry)))
        while not _acquired(lock, LOCK_CHECK_SECONDS):
            waiting()
    except OSError as error:
        raise CacheNotWritableError(
            f"phi3-lsp cannot write to its cache folder {entry.parent} "
            f"({error.strerror or error}): set {CACHE_ENV} to a folder it can write to."
        ) from error
    return lock


def _acquired(lock: FileLock, timeout: float) -> bool:
    """Whether `lock` was acquired within `timeout` seconds."""
    try:
        lock.acquire(timeout=timeout)
    except Timeout:  # an OSError (TimeoutError), which is not the cache's fault
        return False
    return True


def remove_built(entry: Path) -> None:
    """Delete the cache folder `entry` and its lock file, unless a build of it holds the lock."""
    lock_file = _lock_file(entry)
    try:
        with FileLock(str(lock_file), timeout=0):
            shutil.rmtree(entry, ignore_errors=True)
            lock_file.unlink(missing_ok=True)
    except Timeout:
        return


def remove_superseded(
    entry: Path,
    made_from: str,
    *,
    applies: Callable[[Path, dict[str, Any]], bool] = lambda _other, _manifest: True,
) -> None:
    """Delete the other complete entries beside `entry` made from the same file or folder
    (`made_from`, a field of their manifests: an earlier state of it), or from one since
    deleted: nothing reads them again. Entries that `applies` rejects (given the entry and its
    manifest) stay. Only tidies up: a cache it cannot read or write is left as it is."""
    source = built_manifest(entry)
    made_for = None if source is None else source.get(made_from)
    try:
        for other in entry.parent.iterdir():
            manifest = built_manifest(other) if other != entry else None
            if manifest is None or not applies(other, manifest):
                continue
            other_made_for = manifest.get(made_from)
            if not isinstance(other_made_for, str):
                continue
            if other_made_for == made_for:
                log.info("Removing %s: superseded by %s", other, entry.name)
                remove_built(other)
            elif source_deleted(manifest, made_from):
                log.info("Removing %s: %s is gone", other, other_made_for)
                remove_built(other)
        _remove_dead_builds(entry.parent)
    except OSError as error:
        log.warning("Could not tidy up the cache folder %s: %s", entry.parent, error)


def remove_dead_builds_in(root: Path) -> None:
    """Delete the staging folders of builds that died in each kind's folder of the cache `root`
    (see `_remove_dead_builds`): a fetch of the offline model killed halfway leaves its download
    there, and the user may never fetch it again. Only tidies up."""
    try:
        for folder in [path for path in root.iterdir() if path.is_dir()]:
            _remove_dead_builds(folder)
    except OSError as error:  # no cache yet, or one that cannot be read
        log.debug("Could not look for dead builds in %s: %s", root, error)


def _remove_dead_builds(folder: Path) -> None:
    """Delete the staging folders in `folder` of builds that died (a killed process) where no
    build holds their entry's lock: only the next build of the same entry would delete one, and
    an entry keyed by a file that has changed since is never built again (a Phi-3-mini GGUF's
    conversion: up to 15 GB)."""
    for staging in folder.glob(".*.staging-*"):
        entry = folder / staging.name[1:].rsplit(".staging-", 1)[0]
        if _changed_within(staging, DEAD_BUILD_AFTER_SECONDS):
            continue  # a file system that does not honour locks (a share) may hide its build
        try:
            with FileLock(str(_lock_file(entry)), timeout=0):
                log.info("Removing %s: its build died", staging)
                shutil.rmtree(staging, ignore_errors=True)
                if not entry.exists():
                    _lock_file(entry).unlink(missing_ok=True)
        except Timeout:
            continue  # a build is writing it


def _changed_within(folder: Path, seconds: float) -> bool:
    """Whether `folder` or a file in it changed in the last `seconds`."""
    newest = max(path.stat().st_mtime for path in [folder, *folder.iterdir()])
    return time.time() - newest < seconds


def folder_device(path: Path) -> int | None:
    """The device of the folder that holds `path`, for a manifest (see `remove_superseded`)."""
    try:
        return path.resolve().parent.stat().st_dev
    except OSError:
        return None


def source_deleted(manifest: dict[str, Any], made_from: str) -> bool:
    """Whether the file or folder an entry was made from (`made_from`, a field of its
    `manifest`) was deleted since (see `_deleted`); False where its manifest does not say."""
    source = manifest.get(made_from)
    return isinstance(source, str) and _deleted(Path(source), manifest.get("device"))


def _deleted(path: Path, device: object) -> bool:
    """Whether `path` was deleted: its folder is there, on the `device` it was on when the entry
    was made (where recorded), and it is not. A folder not there, or on another device (an
    empty mount point), may hold the file again once its disk is mounted; another machine's
    path (a cache folder shared by several) too: its entry may be needed again."""
    try:
        path.stat()
    except FileNotFoundError:
        folder = path.parent
        return folder.is_dir() and (not isinstance(device, int) or folder.stat().st_dev == device)
    except OSError:  # there, but not readable by us now
        return False
    return False


def built_manifest(entry: Path) -> dict[str, Any] | None:
    """The manifest of a complete cache entry; None for anything else."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _lock_file(entry: Path) -> Path:
    return entry.parent / f".{entry.name}.lock"


def _remove_leftovers(entry: Path) -> None:
    """Drop an incomplete or damaged `entry` and staging folders of builds that died (we hold
    the lock). One that cannot be removed is the user's to remove: one line."""
    try:
        if entry.exists():
            shutil.rmtree(entry)
    except OSError as error:
        raise CacheNotWritableError(
            f"phi3-lsp cannot remove its incomplete or damaged cache folder {entry} "
            f"({error.strerror or error}): delete it, or set {CACHE_ENV} to a folder it can "
            "write to."
        ) from error
    for stale in entry.parent.glob(f".{entry.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
