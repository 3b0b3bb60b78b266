"""Resolve a model spec to files: a hub id, a local folder, a .gguf file, or an offline-pack name.

Every spec ends as plain transformers folders (`tokenizer.json`, `config.json`, safetensors), so the
engine loads all of them the same way. Nothing here imports torch; transformers only to convert.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi3_lsp.errors import ModelSourceError
from phi3_lsp.gguf_convert import convert_gguf, gguf_parsed_once, validate_gguf
from phi3_lsp.offline_pack import AssetName, ensure_asset
from phi3_lsp.paths import build_once, cache_dir, is_built
from phi3_lsp.progress import ProgressCallback, ProgressUpdate, ignore_progress
from phi3_lsp.settings import DEFAULT_MODEL

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL", "OFFLINE_MODEL", "ModelSource", "ModelSourceError", "resolve_model"]

OFFLINE_MODEL: AssetName = "smollm2-135m"
# Hub models whose tokenizer and config the offline pack carries, so they work without weights.
PACK_FALLBACKS: dict[str, AssetName] = {DEFAULT_MODEL.lower(): "phi3-mini"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a causal LM needs from a hub repo; the weights in safetensors only.
HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.py", "*.jinja"]
SPEC_HELP = 'set phi3.model to a hub id, a model folder, a .gguf file, or "smollm2-135m"'


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are. `weights_dir` is None when only tokenizer and config exist."""

    spec: str
    name: str
    tokenizer_dir: Path
    config_dir: Path
    weights_dir: Path | None
    missing_weights_hint: str | None = None
    trust_remote_code: bool = False


def resolve_model(
    spec: str,
    *,
    cache: Path | None = None,
    progress: ProgressCallback | None = None,
    trust_remote_code: bool = False,
    weights: bool = True,
) -> ModelSource:
    """Find (fetching or converting once if needed) the files for `spec`.

    `weights=False`: only the tokenizer and config are wanted. A .gguf file not converted yet
    then gives them from its metadata, without dequantizing its weights.
    """
    spec = spec.strip()
    report = progress or ignore_progress
    root = cache or cache_dir()
    if not spec:
        raise ModelSourceError(f"The model spec is empty — {SPEC_HELP}.")
    if spec == OFFLINE_MODEL:
        folder = ensure_asset(OFFLINE_MODEL, cache=root, progress=report)
        return _from_folder(spec, folder, name="SmolLM2-135M-Instruct", trust_remote_code=False)
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        return _from_gguf(spec, path, root, report, weights=weights)
    if path.is_dir() or _looks_like_path(spec):
        return _from_folder(spec, path, name=path.name, trust_remote_code=trust_remote_code)
    if HUB_ID.match(spec):
        return _from_hub(spec, root, report, trust_remote_code)
    raise ModelSourceError(
        f"Unknown model '{spec}': it is not the offline model {OFFLINE_MODEL}, "
        f"an existing folder, a .gguf file, or a hub id of the form owner/name — {SPEC_HELP}."
    )


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or (os.sep in spec and not HUB_ID.match(spec))


def _from_folder(spec: str, folder: Path, *, name: str, trust_remote_code: bool) -> ModelSource:
    if folder.is_file():
        raise ModelSourceError(
            f"{folder} is a file: give the folder that holds its config.json, tokenizer.json "
            f"and *.safetensors, or a .gguf file — {SPEC_HELP}."
        )
    if not folder.is_dir():
        raise ModelSourceError(f"Model folder {folder} does not exist — {SPEC_HELP}.")
    if not (folder / "config.json").is_file():
        raise ModelSourceError(f"Model folder {folder} has no config.json — {SPEC_HELP}.")
    if not (folder / "tokenizer.json").is_file():
        raise ModelSourceError(
            f"Model folder {folder} has no tokenizer.json (phi3-lsp reads the fast tokenizer "
            "format). Save one with "
            "`AutoTokenizer.from_pretrained(folder).save_pretrained(folder)`, "
            f"or {SPEC_HELP}."
        )
    has_weights = any(folder.glob("*.safetensors"))
    return ModelSource(
        spec=spec,
        name=name,
        tokenizer_dir=folder,
        config_dir=folder,
        weights_dir=folder if has_weights else None,
        missing_weights_hint=None
        if has_weights
        else (
            f"Model folder {folder} has no weights (*.safetensors): the tokenizer and the "
            f"architecture work, completions need weights — add them, or {SPEC_HELP}."
        ),
        trust_remote_code=trust_remote_code,
    )


def _from_gguf(
    spec: str, path: Path, root: Path, report: ProgressCallback, *, weights: bool
) -> ModelSource:
    if not path.is_file():
        raise ModelSourceError(f"GGUF file {path} does not exist — {SPEC_HELP}.")
    key = f"{path.stem}-{_file_key(path)}"
    entry = root / "gguf" / key
    if not weights and not is_built(entry):
        # The weights would be dequantized and written as fp32, which grows with the model
        # (SmolLM2-135M's: 0.5 GB and ~3 s more), for commands that read none of them.
        return _gguf_converted(spec, path, root / "gguf-metadata" / key, report, weights=False)
    return _gguf_converted(spec, path, entry, report, weights=True)


def _gguf_converted(
    spec: str, path: Path, entry: Path, report: ProgressCallback, *, weights: bool
) -> ModelSource:
    """The source of `path` converted once into the cache folder `entry` (with its weights or
    without)."""

    def convert(staging: Path) -> None:
        if weights:
            report(ProgressUpdate("converting", f"Converting {path.name} to safetensors (once)"))
        else:
            report(ProgressUpdate("converting", f"Reading the tokenizer and config of {path.name}"))
        try:
            convert_gguf(path, staging, with_weights=weights)
        except ModelSourceError:
            raise
        except Exception as exc:  # transformers raises many kinds for unsupported GGUFs
            raise ModelSourceError(
                f"Could not convert GGUF file {path} ({type(exc).__name__}: {exc}). "
                f"transformers may not support its architecture or quantization — {SPEC_HELP}."
            ) from exc

    if not is_built(entry):
        with gguf_parsed_once():  # the check and the conversion parse the file's metadata once
            validate_gguf(path)
            build_once(entry, convert, manifest={"gguf": str(path.resolve())})
    return _from_folder(spec, entry, name=path.name, trust_remote_code=False)


def _file_key(path: Path) -> str:
    """Identify a file version cheaply (hashing gigabytes on every start would be slow)."""
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _from_hub(
    repo_id: str, root: Path, report: ProgressCallback, trust_remote_code: bool
) -> ModelSource:
    fallback = PACK_FALLBACKS.get(repo_id.lower())
    snapshot, failure = _hub_snapshot(repo_id, report)
    if snapshot is not None:
        try:
            source = _from_folder(
                repo_id, snapshot, name=repo_id, trust_remote_code=trust_remote_code
            )
        except ModelSourceError as incomplete:
            if fallback is None:
                raise
            failure = str(incomplete)
        else:
            if source.weights_dir is not None or fallback is None:
                return source
            failure = f"the local copy of {repo_id} has no safetensors weights"
    if fallback is None:
        raise ModelSourceError(_not_found_message(repo_id, failure))
    folder = ensure_asset(fallback, cache=root, progress=report)
    log.info("Using the offline pack's tokenizer and config for %s (%s)", repo_id, failure)
    return ModelSource(
        spec=repo_id,
        name=repo_id,
        tokenizer_dir=folder,
        config_dir=folder,
        weights_dir=None,
        missing_weights_hint=(
            f"{repo_id} has no weights on this machine ({failure}): hovers and the architecture "
            'work, completions need weights. Set phi3.model to "smollm2-135m" for completions '
            "from the offline model, or download the weights where the network allows "
            f"(`hf download {repo_id}`)."
        ),
        trust_remote_code=trust_remote_code,
    )


def _not_found_message(repo_id: str, failure: str) -> str:
    not_on_hub = (
        f"{repo_id} is not in the local Hugging Face cache and could not be downloaded ({failure})"
    )
    # owner/name is also a relative path: where its first part is a folder here, a mistyped
    # folder is as likely as a hub id, so say both.
    if Path(repo_id).parent.is_dir():
        return (
            f"There is no folder ./{repo_id} in {Path.cwd()}, and {not_on_hub}. For a folder, "
            "check the path or set phi3.model to its full path; for a hub model, download it "
            f"where the network allows (`hf download {repo_id}`); or use the offline model "
            '"smollm2-135m".'
        )
    return (
        f"Model {not_on_hub}. Download it where the network allows (`hf download {repo_id}`), "
        'point phi3.model at a local folder, or use the offline model "smollm2-135m".'
    )


def _hub_snapshot(repo_id: str, report: ProgressCallback) -> tuple[Path | None, str]:
    """The repo's folder from the hub cache, downloading it if allowed; else (None, why)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True)), ""
    except LocalEntryNotFoundError:
        pass
    if constants.HF_HUB_OFFLINE:
        return None, "HF_HUB_OFFLINE=1 is set"
    # Offline, this is as far as it gets: say what is tried, not that a download runs.
    report(ProgressUpdate("fetching", f"Looking for {repo_id} on the Hugging Face hub", 0.0))
    try:
        folder = snapshot_download(
            repo_id, allow_patterns=HUB_FILES, etag_timeout=5, tqdm_class=_progress_bar(report)
        )
    except LocalEntryNotFoundError:  # what the hub's client raises when it cannot connect
        return None, "the Hugging Face hub cannot be reached, and the model is not in its cache"
    except Exception as exc:  # auth and missing-repo errors also mean "not available"
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc}"
    return Path(folder), ""


def _progress_bar(report: ProgressCallback) -> Any:
    """A tqdm class that forwards hub download progress to `report`."""
    from tqdm.auto import tqdm

    class ForwardingBar(tqdm):  # type: ignore[misc, type-arg]
        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            if self.total:
                label = str(self.desc or "Downloading")
                report(ProgressUpdate("fetching", label, self.n / self.total))
            return shown

    return ForwardingBar
