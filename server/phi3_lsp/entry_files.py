"""The files of a cache entry: listed with their sizes when it is built, on the disk before it
counts as built, and checked with a stat each whenever it is read.

A power cut, a full disk or a stray edit can leave an entry with a file cut short, emptied or
gone; its manifest says what it should hold, so such an entry is known damaged and made again
instead of failing every load.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SYNC_REFUSED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EROFS}
"""What a file system that does not sync answers (fsync(2))."""

FILES = "files"
"""The manifest field listing an entry's files: relative path → size in bytes. Entries made
before it was added have none, and are taken as whole, as they were then."""


def listed_files(folder: Path) -> dict[str, int]:
    """Every file under `folder`, as a relative POSIX path, with its size in bytes."""
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def sync_tree(folder: Path) -> None:
    """Put the files under `folder`, and the folders themselves, on the disk: a rename after
    this cannot outlive the data it names (a power cut would otherwise leave empty files)."""
    for path in sorted(folder.rglob("*"), reverse=True):  # files before the folders naming them
        if path.is_file():
            _sync(path)
        elif path.is_dir():
            sync_folder(path)
    sync_folder(folder)


def sync_folder(folder: Path) -> None:
    """Put the names in `folder` (a rename into it) on the disk, where the system allows it."""
    if os.name == "nt":  # a folder cannot be opened to sync it there; NTFS journals renames
        return
    try:
        _sync(folder)
    except OSError:  # some file systems refuse it: the rename is still atomic, only not durable
        return


def replace_file(path: Path, data: bytes) -> None:
    """Make `data` the content of `path` at once: written beside it, put on the disk, then
    renamed over it, so that a reader or a power cut finds the old content or the new."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        _sync(temporary)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def _sync(path: Path) -> None:
    # Windows flushes only a handle open for writing; elsewhere reading is enough.
    descriptor = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in _SYNC_REFUSED:
            raise
        # Some shares and virtual file systems cannot sync: the entry is as safe as before.
        log.debug("Cannot put %s on the disk: %s", path, error)
    finally:
        os.close(descriptor)


def damage(entry: Path, manifest: dict[str, Any]) -> str | None:
    """What is wrong with the files of the built `entry` against its `manifest`, in words (the
    first file that differs); None when each is there with its size, or none are listed."""
    files = manifest.get(FILES)
    if not isinstance(files, dict):
        return None
    for relative, size in files.items():
        if not isinstance(size, int):
            return f"its manifest gives no size for {relative}"
        try:
            found = (entry / relative).stat().st_size
        except FileNotFoundError:
            return f"{relative} is missing, expected {size:,} bytes"
        except OSError as error:
            return f"{relative} cannot be read ({error.strerror or error})"
        if found != size:
            return f"{relative} has {found:,} bytes, expected {size:,}"
    return None
