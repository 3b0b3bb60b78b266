"""Hub models for tests without the Hugging Face hub: a repo laid in the hub's cache as
huggingface_hub lays it."""

from __future__ import annotations

import hashlib
import json
import os
from fnmatch import fnmatch
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
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
) -> Path:
    """Lay out `folder` as the hub's cache does after a download of `repo_id`: blobs named by
    their hash, and a snapshot of links to them. `only`: the file patterns downloaded (a
    partial download); `listed`: the repo's file list kept beside them, as snapshot downloads of
    huggingface_hub 2 do (they then know which files a snapshot misses)."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in repo_files(folder):
        if only is not None and not any(fnmatch(file.name, pattern) for pattern in only):
            continue
        blob = repo / "blobs" / sha256_of(file)
        blob.write_bytes(file.read_bytes())
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    if listed:
        (repo / "trees").mkdir()
        (repo / "trees" / f"{COMMIT}.json").write_text(json.dumps(tree_listing(folder)))
    return snapshot


def repo_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file())


def sha256_of(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def tree_listing(folder: Path) -> dict[str, object]:
    """The repo's file list as huggingface_hub keeps it (`trees/<commit>.json`, format 1)."""
    files = {
        file.name: {"size": file.stat().st_size, "blob_id": sha256_of(file)}
        for file in repo_files(folder)
    }
    return {"format_version": 1, "files": files}
