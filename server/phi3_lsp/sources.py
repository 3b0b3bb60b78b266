"""Resolve a model spec to files: a hub id, a local folder, a .gguf file, or an offline-pack name.

Every spec ends as plain transformers folders (`tokenizer.json`, `config.json`, safetensors), so the
engine loads all of them the same way. Nothing here imports torch; transformers only to convert.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeVar

from phi3_lsp.build_waits import waiting_for_another_process
from phi3_lsp.errors import ModelSourceError
from phi3_lsp.gguf_convert import (
    conversion_hook,
    convert_gguf,
    gguf_parsed_once,
    validate_gguf,
)
from phi3_lsp.hub_downloads import cached_snapshot, delete_abandoned_parts, downloaded_snapshot
from phi3_lsp.load_stops import LoadStop, LoadStopped
from phi3_lsp.offline_pack import AssetName, asset_dir, ensure_asset, replaced_by_whole
from phi3_lsp.paths import (
    build_once,
    cache_dir,
    folder_device,
    is_built,
    remove_dead_builds_in,
    remove_superseded,
)
from phi3_lsp.progress import ProgressCallback, ProgressUpdate, ignore_progress
from phi3_lsp.settings import DEFAULT_MODEL
from phi3_lsp.token_flag_upgrades import upgrade_token_flags
from phi3_lsp.token_flags import LLAMA_CPP, TOKEN_FLAGS

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL",
    "OFFLINE_MODEL",
    "ModelSource",
    "ModelSourceError",
    "fetch_weights",
    "parsed_once",
    "read_model",
    "resolve_model",
]

_T = TypeVar("_T")

OFFLINE_MODEL: AssetName = "smollm2-135m"
# Hub models whose tokenizer and config the offline pack carries, so they work without weights.
PACK_FALLBACKS: dict[str, AssetName] = {DEFAULT_MODEL.lower(): "phi3-mini"}
WEB_ADDRESS = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a causal LM needs from a hub repo, in two parts: the weights (safetensors only) are
# fetched after the rest, which is a few MB where they can be gigabytes (Phi-3-mini's: 7.6 GB).
HUB_WEIGHTS = ["*.safetensors"]
HUB_SMALL_FILES = ["*.json", "tokenizer.model", "*.tiktoken", "*.txt", "*.py", "*.jinja"]
HUB_FILES = [*HUB_SMALL_FILES, *HUB_WEIGHTS]
SPEC_HELP = 'set phi3.model to a hub id, a model folder, a .gguf file, or "smollm2-135m"'


@dataclass(frozen=True)
class GgufConversion:
    """A .gguf file's conversion with its weights, into the cache folder `entry`, taking the
    tokenizer its conversion without them left in `tokenizer_dir`."""

    file: Path
    entry: Path
    tokenizer_dir: Path | None


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
    weights_pending: bool = False
    """Its weights are not ready yet, and `fetch_weights` gets them: a hub model's, from the
    hub; a .gguf file's, by its `conversion`."""
    conversion: GgufConversion | None = None


def resolve_model(
    spec: str,
    *,
    cache: Path | None = None,
    progress: ProgressCallback | None = None,
    trust_remote_code: bool = False,
    weights: bool | Literal["later"] = True,
    stop: LoadStop | None = None,
) -> ModelSource:
    """Find (fetching or converting once if needed) the files for `spec`.

    `weights=False`: only the tokenizer and config are wanted. A hub model's weights are then
    not downloaded, and a .gguf file (or the offline model) not converted yet gives them from
    its metadata, without dequantizing its weights. `weights="later"`: the weights of a hub
    model, or of a .gguf file not converted yet, are left to `fetch_weights`, so that its
    tokenizer can be in use while they download or convert; other specs resolve as with True.
    Raises `LoadStopped` as soon as `stop` is set during a download, or during a conversion
    between two tensors.
    """
    spec = spec.strip()
    report = progress or ignore_progress
    root = cache or cache_dir()
    if not spec:
        raise ModelSourceError(f"The model spec is empty — {SPEC_HELP}.")
    # Whatever the model: one whose download was killed may never be asked for again (the
    # user chose another), and its part can be gigabytes.
    delete_abandoned_parts()
    remove_dead_builds_in(root)
    if spec == OFFLINE_MODEL:
        folder = ensure_asset(
            OFFLINE_MODEL, cache=root, progress=report, stop=stop, weights=weights is not False
        )
        return _from_folder(spec, folder, name="SmolLM2-135M-Instruct", trust_remote_code=False)
    if WEB_ADDRESS.match(spec):  # else taken for a folder, "https:/…" with a slash dropped
        raise ModelSourceError(_web_address_message(spec))
    path = _expanded(spec)
    # A folder named like a .gguf file is still a folder: loaded as one if it is a model's.
    if spec.lower().endswith(".gguf") and not path.is_dir():
        return _from_gguf(spec, path, root, report, weights=weights)
    if path.is_dir() or _looks_like_path(spec):
        return _from_folder(spec, path, name=path.name, trust_remote_code=trust_remote_code)
    if HUB_ID.match(spec):
        _check_hub_id(spec)
        source = _from_hub(spec, root, report, trust_remote_code, stop)
        return fetch_weights(source, progress=report, stop=stop) if weights is True else source
    raise ModelSourceError(
        f"Unknown model '{spec}': it is not the offline model {OFFLINE_MODEL}, "
        f"an existing folder, a .gguf file, or a hub id of the form owner/name — {SPEC_HELP}."
    )


def read_model(
    spec: str,
    read: Callable[[ModelSource], _T],
    *,
    cache: Path | None = None,
    progress: ProgressCallback | None = None,
) -> _T:
    """What `read` makes of the tokenizer and config of `spec`, resolved without its weights
    (see `resolve_model`).

    The offline model's folder without weights goes once another process (a server) has
    fetched the model whole: where that happened while it was resolved or read here (`read`
    failed, or may have found a file missing), it is read again from the whole folder, which
    holds the same tokenizer and config.
    """
    root = cache or cache_dir()
    offline = spec.strip() == OFFLINE_MODEL
    source: ModelSource | None = None

    def read_whole_or_elsewhere() -> bool:
        """Whether nothing read was taken from under it: the whole folder, or another model's."""
        read_whole = source is not None and source.tokenizer_dir == asset_dir(OFFLINE_MODEL, root)
        return not offline or read_whole or not replaced_by_whole(OFFLINE_MODEL, root)

    try:
        source = resolve_model(spec, cache=root, progress=progress, weights=False)
        result = read(source)
    except Exception:
        if read_whole_or_elsewhere():
            raise
    else:
        if read_whole_or_elsewhere():
            return result
    log.info("The folder of %s without weights went while it was read: reading it whole", spec)
    return read(resolve_model(spec, cache=root, progress=progress, weights=False))


def _web_address_message(spec: str) -> str:
    """What to set instead of a web address: a hub model page's hub id, where it names one."""
    page = re.match(r"^https?://(?:www\.)?(?:huggingface\.co|hf\.co)/([^/?#]+/[^/?#]+)", spec)
    if page is not None and HUB_ID.match(page[1]):
        return f"{spec} is a web page: set phi3.model to its hub id, {page[1]}."
    return (
        f"{spec} is a web address, which phi3-lsp does not download from — download the model, "
        f"then {SPEC_HELP}."
    )


def _expanded(spec: str) -> Path:
    """`spec` as a path, with a leading ~ or ~user expanded."""
    try:
        return Path(spec).expanduser()
    except RuntimeError as error:  # ~user of no user here, or ~ without a home directory
        user = spec[1:].split("/", 1)[0].split(os.sep, 1)[0]
        unknown = f"there is no user '{user}' here" if user else "the home directory is unknown"
        raise ModelSourceError(
            f"Model path {spec} cannot be expanded: {unknown} — give the full path, or {SPEC_HELP}."
        ) from error


def _check_hub_id(spec: str) -> None:
    """Raise `ModelSourceError` for an owner/name the hub refuses (`HUB_ID` is looser)."""
    # Imported here, as elsewhere in this module: folders and the offline model never need it.
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    try:
        validate_repo_id(spec)
    except HFValidationError as error:
        raise ModelSourceError(
            f"'{spec}' is not a valid Hugging Face hub id ({str(error).rstrip('.')}) — {SPEC_HELP}."
        ) from error


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
        raise ModelSourceError(_no_config_message(folder))
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


def _no_config_message(folder: Path) -> str:
    """What to do about a folder without config.json (one named like a .gguf file included)."""
    if folder.suffix.lower() != ".gguf":
        return f"Model folder {folder} has no config.json — {SPEC_HELP}."
    # Named like a GGUF file: most likely the folder a download of one was put in.
    problem = f"{folder} is a folder, not a GGUF file, and has no config.json of a model folder"
    inside = sorted(file.name for file in folder.glob("*.gguf") if file.is_file())
    if len(inside) == 1:
        return f"{problem} — set phi3.model to the GGUF file in it, {folder / inside[0]}."
    if inside:
        return f"{problem} — set phi3.model to one of the GGUF files in it ({', '.join(inside)})."
    return f"{problem} — {SPEC_HELP}."


def _from_gguf(
    spec: str,
    path: Path,
    root: Path,
    report: ProgressCallback,
    *,
    weights: bool | Literal["later"],
) -> ModelSource:
    if not path.is_file():
        raise ModelSourceError(f"GGUF file {path} does not exist — {SPEC_HELP}.")
    key = f"{path.stem}-{_file_key(path)}"
    entry = root / "gguf" / key
    metadata = root / "gguf-metadata" / key
    if weights is True or is_built(entry):
        tokenizer_dir = metadata if is_built(metadata) else None
        return _gguf_converted(spec, path, entry, report, weights=True, tokenizer_dir=tokenizer_dir)
    # Dequantizing the weights takes the longest (SmolLM2-135M: seconds; a Phi-3-mini GGUF:
    # minutes), and writes them as fp32: the tokenizer and config come from the metadata alone.
    source = _gguf_converted(spec, path, metadata, report, weights=False)
    if weights is False:
        return source
    conversion = GgufConversion(path, entry, tokenizer_dir=metadata)
    return replace(source, missing_weights_hint=None, weights_pending=True, conversion=conversion)


def _gguf_converted(
    spec: str,
    path: Path,
    entry: Path,
    report: ProgressCallback,
    *,
    weights: bool,
    tokenizer_dir: Path | None = None,
    stop: LoadStop | None = None,
) -> ModelSource:
    """The source of `path` converted once into the cache folder `entry` (with its weights or
    without), with the tokenizer converted already in `tokenizer_dir` if given. Raises
    `LoadStopped` between two tensors once `stop` is set, leaving nothing in the cache."""
    converting = f"Converting {path.name} to safetensors (once)"

    def convert(staging: Path) -> None:
        if weights:
            report(ProgressUpdate("converting", converting))
        else:
            report(ProgressUpdate("converting", f"Reading the tokenizer and config of {path.name}"))
        try:
            convert_gguf(
                path,
                staging,
                with_weights=weights,
                tokenizer_dir=tokenizer_dir,
                before_step=conversion_hook(report, converting, stop),
            )
        except (ModelSourceError, LoadStopped):
            raise
        except Exception as exc:  # transformers raises many kinds for unsupported GGUFs
            raise ModelSourceError(
                f"Could not convert GGUF file {path} ({type(exc).__name__}: {exc}). "
                f"transformers may not support its architecture or quantization — {SPEC_HELP}."
            ) from exc

    if is_built(entry):
        upgrade_token_flags(entry, path)
    else:
        with gguf_parsed_once():  # the check and the conversion parse the file's metadata once
            validate_gguf(path)
            manifest = {
                "gguf": str(path.resolve()),
                "device": folder_device(path),
                TOKEN_FLAGS: LLAMA_CPP,
            }
            another = ProgressUpdate(
                "converting", f"Waiting for another phi3-lsp process to convert {path.name}"
            )
            waiting = waiting_for_another_process(report, stop, another)
            build_once(entry, convert, manifest=manifest, waiting=waiting)
        # The conversion of the file before it changed, or of one deleted since: a Phi-3-mini
        # GGUF's weights are 15 GB in fp32.
        remove_superseded(entry, "gguf")
    return _from_folder(spec, entry, name=path.name, trust_remote_code=False)


@contextlib.contextmanager
def parsed_once(spec: str) -> Iterator[None]:
    """Within the block, a .gguf file's metadata, parsed for its tokenizer and config by
    `resolve_model(weights="later")`, is not parsed again for its conversion by
    `fetch_weights` (SmolLM2's: ~2.4 s, in pure Python). For other specs it changes nothing."""
    if not spec.strip().lower().endswith(".gguf"):
        yield
        return
    with gguf_parsed_once():
        yield


def _file_key(path: Path) -> str:
    """Identify a file version cheaply (hashing gigabytes on every start would be slow)."""
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _from_hub(
    repo_id: str,
    root: Path,
    report: ProgressCallback,
    trust_remote_code: bool,
    stop: LoadStop | None,
) -> ModelSource:
    """The repo's tokenizer and config, with its weights where the cache holds them all."""
    fallback = PACK_FALLBACKS.get(repo_id.lower())
    snapshot, failure = _small_files_snapshot(repo_id, report, stop)
    if snapshot is not None:
        try:
            return _hub_source(repo_id, snapshot, trust_remote_code)
        except ModelSourceError as incomplete:
            if fallback is None:
                raise
            failure = str(incomplete)
    if fallback is None:
        raise ModelSourceError(_not_found_message(repo_id, failure))
    folder = ensure_asset(fallback, cache=root, progress=report, stop=stop)
    log.info("Using the offline pack's tokenizer and config for %s (%s)", repo_id, failure)
    return ModelSource(
        spec=repo_id,
        name=repo_id,
        tokenizer_dir=folder,
        config_dir=folder,
        weights_dir=None,
        missing_weights_hint=_missing_weights_hint(repo_id, failure),
        trust_remote_code=trust_remote_code,
    )


def fetch_weights(
    source: ModelSource,
    *,
    progress: ProgressCallback | None = None,
    stop: LoadStop | None = None,
) -> ModelSource:
    """`source` with the weights it left to fetch or convert (see `weights_pending`), or as it
    is. A hub model's weights that cannot be had leave it without them, its hint saying why.

    Raises `LoadStopped` as soon as `stop` is set before a conversion, or during a download:
    the download ends at its next read, leaving no part of a file in the cache (see
    `hub_downloads`), or during a conversion, between two of its tensors.
    """
    if not source.weights_pending:
        return source
    report = progress or ignore_progress
    if source.conversion is not None:
        if stop is not None:
            stop.check()
        conversion = source.conversion
        return _gguf_converted(
            source.spec,
            conversion.file,
            conversion.entry,
            report,
            weights=True,
            tokenizer_dir=conversion.tokenizer_dir,
            stop=stop,
        )
    repo_id = source.spec
    report(
        ProgressUpdate(
            "fetching", f"Looking for the weights of {repo_id} on the Hugging Face hub", 0.0
        )
    )
    snapshot, failure = downloaded_snapshot(
        repo_id,
        HUB_FILES,
        report,
        downloading=f"Downloading the weights of {repo_id}",
        unreachable="the Hugging Face hub cannot be reached, and its weights are not in its cache",
        stop=stop,
    )
    if snapshot is not None:
        try:
            fetched = _hub_source(repo_id, snapshot, source.trust_remote_code)
        except ModelSourceError as incomplete:  # the repo changed since its tokenizer was read
            failure = str(incomplete)
        else:
            if fetched.weights_dir is not None:
                return fetched
            failure = (
                "no weights in safetensors, the only format phi3-lsp reads, came from the "
                "Hugging Face cache or the hub: it may not be reachable, or have none for it"
            )
    log.info("%s has no weights here (%s)", repo_id, failure)
    return replace(
        source, weights_pending=False, missing_weights_hint=_missing_weights_hint(repo_id, failure)
    )


def _hub_source(repo_id: str, snapshot: Path, trust_remote_code: bool) -> ModelSource:
    """The source of a snapshot folder that holds the repo's tokenizer and config; its weights
    are pending when the cache lacks some, unless HF_HUB_OFFLINE=1 forbids fetching them."""
    from huggingface_hub import constants

    source = _from_folder(repo_id, snapshot, name=repo_id, trust_remote_code=trust_remote_code)
    if _holds_all_weights(repo_id, snapshot):
        return replace(source, weights_dir=snapshot, missing_weights_hint=None)
    if constants.HF_HUB_OFFLINE:
        hint = _missing_weights_hint(repo_id, "HF_HUB_OFFLINE=1 is set")
        return replace(source, weights_dir=None, missing_weights_hint=hint)
    return replace(source, weights_dir=None, missing_weights_hint=None, weights_pending=True)


def _holds_all_weights(repo_id: str, snapshot: Path) -> bool:
    """Whether the cache holds every weight file of the repo in `snapshot`.

    huggingface_hub knows the repo's files where a snapshot download listed them, and reports
    a snapshot that misses some; a cache filled file by file (as transformers reads a repo) has
    no such list, so the safetensors index, where there is one, names the shards to check.
    """
    if cached_snapshot(repo_id, HUB_FILES) != snapshot:
        return False
    index = snapshot / "model.safetensors.index.json"
    if not index.is_file():
        return any(snapshot.glob("*.safetensors"))
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # The load names a broken index better than a guess here.
        return any(snapshot.glob("*.safetensors"))
    return bool(shards) and all((snapshot / shard).is_file() for shard in shards)


def _missing_weights_hint(repo_id: str, failure: str) -> str:
    return (
        f"{repo_id} has no weights on this machine ({failure}): hovers and the architecture "
        'work, completions need weights. Set phi3.model to "smollm2-135m" for completions '
        "from the offline model, or download the weights where the network allows "
        f"(`hf download {repo_id}`)."
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


def _small_files_snapshot(
    repo_id: str, report: ProgressCallback, stop: LoadStop | None
) -> tuple[Path | None, str]:
    """The repo's folder with its tokenizer and config from the hub cache, downloading them (not
    the weights) if allowed; else (None, why)."""
    from huggingface_hub import constants

    snapshot = cached_snapshot(repo_id, HUB_SMALL_FILES)
    if snapshot is not None:
        return snapshot, ""
    if constants.HF_HUB_OFFLINE:
        return None, "HF_HUB_OFFLINE=1 is set"
    # Offline, this is as far as it gets: say what is tried, not that a download runs.
    report(ProgressUpdate("fetching", f"Looking for {repo_id} on the Hugging Face hub", 0.0))
    return downloaded_snapshot(
        repo_id,
        HUB_SMALL_FILES,
        report,
        downloading=f"Downloading the tokenizer and config of {repo_id}",
        unreachable="the Hugging Face hub cannot be reached, and the model is not in its cache",
        stop=stop,
    )
