"""The safetensors files a model's weights load from, checked before they load.

transformers reports a file cut short (a copy or a download that stopped) or a broken shard
index in the safetensors library's words, without the file's name ("incomplete metadata, file
not fully covered"). Their headers say as much in a few reads, so the load names the file and
the fix first.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

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
    model.safetensors, else the files its index names; none when there is neither (transformers
    names what it looked for)."""
    single = weights_dir / SINGLE_FILE
    if single.is_file():
        return [single]
    index = weights_dir / INDEX_FILE
    if not index.is_file():
        return []
    names = _shard_names(index)
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


def _check_safetensors(file: Path) -> None:
    """Raise `ModelSourceError` when `file` is shorter than its header says, or has no header:
    8 bytes of length (little-endian), then that much JSON, each tensor's byte range in it."""
    try:
        size = file.stat().st_size
        with file.open("rb") as stream:
            start = stream.read(8)
            length = struct.unpack("<Q", start)[0] if len(start) == 8 else None
            if start == b"version ":  # git clone without git-lfs leaves these few lines
                raise _not_safetensors(file, "a Git LFS pointer: `git lfs pull` fetches the file")
            if length is None or length > _LARGEST_HEADER:
                raise _not_safetensors(file, f"no header length in its first {len(start)} bytes")
            if size < 8 + length:
                raise _cut_short(file, size, 8 + length)
            header = json.loads(stream.read(length))
        tensors = [entry for name, entry in header.items() if name != "__metadata__"]
        expected = 8 + length + max((entry["data_offsets"][1] for entry in tensors), default=0)
    except OSError as error:
        raise ModelSourceError(
            f"{file} cannot be read ({error.strerror or error}) — check its permissions, or "
            f"{SPEC_HELP}."
        ) from error
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
