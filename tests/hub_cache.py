"""Hub models for tests without the Hugging Face hub: a repo laid in the hub's cache as
huggingface_hub lays it."""

from __future__ import annotations

import hashlib
import json
import os
from fnmatch import fnmatch
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
"""The commit that the local hub serves."""
EARLIER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
WEIGHTS = "*.safetensors"
NO_WEIGHTS = ["*.json"]
"""What a download of the tokenizer and config alone leaves of the test models (their
config.json, tokenizer.json, tokenizer_config.json and generation_config.json)."""


def place_in_hub_cache(
    hub: Path,
    repo_id: str,
    folder: Path,
    *,
    only: list[str] | None = None,
    listed: bool = False,
    commit: str = COMMIT,
) -> Path:
    """Lay out `folder` as the hub's cache does after a download of `repo_id` at `commit` (its
    latest from then on): blobs named by their hash, and a snapshot of links to them. `only`:
    the file patterns downloaded (a partial download); `listed`: the repo's file list kept
    beside them, as snapshot downloads of huggingface_hub 2 do (they then know which files a
    snapshot misses)."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in repo_files(folder):
        if only is not None and not any(fnmatch(file.name, pattern) for pattern in only):
            continue
        blob = repo / "blobs" / sha256_of(file)
        blob.write_bytes(file.read_bytes())
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    if listed:
        (repo / "trees").mkdir(exist_ok=True)
        (repo / "trees" / f"{commit}.json").write_text(json.dumps(tree_listing(folder)))
    return snapshot


def repo_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file())


def sha256_of(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def blob_id(file: Path) -> str:
    """The file's blob id, as the hub lists it: for the weights, kept in LFS, that of their
    pointer (as git has it), not the hash of their content; for other files, here, the hash of
    their content (which the hub's ETag, and so the cache's blob, names them by too)."""
    if not fnmatch(file.name, WEIGHTS):
        return sha256_of(file)
    pointer = lfs_pointer(file)
    return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()


def lfs_pointer(file: Path) -> bytes:
    """What git keeps of a file kept in LFS."""
    return (
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{sha256_of(file)}\nsize {file.stat().st_size}\n"
    ).encode()


def tree_listing(folder: Path) -> dict[str, object]:
    """The repo's file list as huggingface_hub keeps it (`trees/<commit>.json`, format 1)."""
    files = {
        file.name: {"size": file.stat().st_size, "blob_id": blob_id(file)}
        for file in repo_files(folder)
    }
    return {"format_version": 1, "files": files}
