"""The safetensors files a model's weights load from, checked before they load.

transformers reports a file cut short (a copy or a download that stopped) or a broken shard
index in the safetensors library's words, without the file's name ("incomplete metadata, file
not fully covered"). Their headers say as much in a few reads, so the load names the file and
the fix first.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from phi3_lsp.errors import ModelSourceError
from phi3_lsp.sources import SPEC_HELP

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_LARGEST_HEADER = 100 << 20
"""The longest header the safetensors library reads (100 MB)."""


def check_weight_files(weights_dir: Path) -> None:
    """Raise `ModelSourceError` naming the first file of the weights in `weights_dir` that
    cannot load whole: an index that cannot be read or names a file not there, a file cut
    short, one that is not safetensors. Reads only the files' headers."""
    for file in _files_loaded(weights_dir):
        _check_safetensors(file)


def _files_loaded(weights_dir: Path) -> list[Path]:
    """The files transformers loads a folder's weights from, as it chooses them:
    model.safetensors, else the files its index names. Other safetensors files alone are
    refused, naming the names it loads; with none at all, the folder has no weights."""
    single = weights_dir / SINGLE_FILE
    _check_not_a_broken_link(single)
    if single.is_file():
        return [single]
    index = weights_dir / INDEX_FILE
    if not index.is_file():
        others = sorted(file.name for file in weights_dir.glob("*.safetensors"))
        if others:  # a checkpoint saved or renamed by hand
            raise ModelSourceError(
                f"{weights_dir} has {', '.join(others)} but no {SINGLE_FILE} or {INDEX_FILE}, "
                f"the names transformers loads weights from — rename a single file to "
                f"{SINGLE_FILE}, or {SPEC_HELP}."
            )
        return []
    names = _shard_names(index)
    for name in names:
        _check_not_a_broken_link(weights_dir / name)
    missing = [name for name in names if not (weights_dir / name).is_file()]
    if missing:
        if len(missing) == 1:
            absent = f"{missing[0]}, which is not in {weights_dir}: a copy or download left it out"
        else:
            absent = (
                f"{len(missing)} files that are not in {weights_dir} ({missing[0]}, …): a copy "
                "or download left them out"
            )
        raise ModelSourceError(
            f"{index} puts weights in {absent} — copy or download the model again, or {SPEC_HELP}."
        )
    return [weights_dir / name for name in names]


def _check_not_a_broken_link(file: Path) -> None:
    """Raise `ModelSourceError` when `file` is a link to a file that is gone: a hub cache's blob
    deleted, or a snapshot copied without following its relative links."""
    if file.is_symlink() and not file.exists():
        raise ModelSourceError(
            f"{file} is a link to {os.readlink(file)}, which is gone — download the model "
            f"again, or copy its folder with the links followed (`cp -rL`), or {SPEC_HELP}."
        )


def _shard_names(index: Path) -> list[str]:
    """The file names an index's `weight_map` gives its tensors."""
    try:
        content = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
        problem = f"{type(error).__name__}: {error}"
    else:
        weight_map = content.get("weight_map") if isinstance(content, dict) else None
        if isinstance(weight_map, dict) and all(isinstance(n, str) for n in weight_map.values()):
            return sorted(set(weight_map.values()))
        problem = "it has no weight_map from tensor names to file names"
    raise ModelSourceError(
        f"{index} cannot be read ({problem}); it says which file holds each tensor — copy or "
        f"download the model again, or {SPEC_HELP}."
    )


class NoHeaderError(ValueError):
    """A file without a safetensors header's length at its start."""


class HeaderCutShortError(ValueError):
    """A file that ends within its header, which needs `needed` bytes of file."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"the file ends within its header of {needed - 8:,} bytes")
        self.needed = needed


def read_header(file: Path) -> tuple[int, dict[str, Any]]:
    """The bytes a safetensors file's header takes, and its tensors' entries by name: 8 bytes
    of length (little-endian), then that much JSON. Raises `OSError`,
    `NoHeaderError`, `HeaderCutShortError` or `ValueError` (a header that is not JSON)."""
    with file.open("rb") as stream:
        start = stream.read(8)
        if start == b"version ":  # git clone without git-lfs leaves these few lines
            raise NoHeaderError("a Git LFS pointer: `git lfs pull` fetches the file")
        length = struct.unpack("<Q", start)[0] if len(start) == 8 else None
        if length is None or length > _LARGEST_HEADER:
            raise NoHeaderError(f"no header length in its first {len(start)} bytes")
        text = stream.read(length)
    if len(text) < length:
        raise HeaderCutShortError(8 + length)
    header = json.loads(text)
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object")
    return length, {name: entry for name, entry in header.items() if name != "__metadata__"}


def _check_safetensors(file: Path) -> None:
    """Raise `ModelSourceError` when `file` is shorter than its header says, or has no header."""
    try:
        size = file.stat().st_size
        length, tensors = read_header(file)
        expected = (
            8 + length + max((entry["data_offsets"][1] for entry in tensors.values()), default=0)
        )
    except PermissionError as error:
        raise ModelSourceError(
            f"{file} cannot be read ({error.strerror or error}) — check its permissions, or "
            f"{SPEC_HELP}."
        ) from error
    except OSError as error:  # a disk error, a share that went away
        raise ModelSourceError(
            f"{file} cannot be read ({error.strerror or error}) — check the disk or share it is "
            f"on, or {SPEC_HELP}."
        ) from error
    except NoHeaderError as error:
        raise _not_safetensors(file, str(error)) from error
    except HeaderCutShortError as error:
        raise _cut_short(file, size, error.needed) from error
    except (ValueError, AttributeError, KeyError, IndexError, TypeError) as error:
        raise _not_safetensors(file, f"its header is not safetensors JSON: {error}") from error
    if size < expected:
        raise _cut_short(file, size, expected)


def _cut_short(file: Path, size: int, expected: int) -> ModelSourceError:
    return ModelSourceError(
        f"{file} is cut short ({size:,} of the {expected:,} bytes its header lists): a copy or "
        f"download stopped before its end — copy or download it again, or {SPEC_HELP}."
    )


def _not_safetensors(file: Path, problem: str) -> ModelSourceError:
    return ModelSourceError(
        f"{file} is not a safetensors file ({problem}) — copy or download it again, or {SPEC_HELP}."
    )
