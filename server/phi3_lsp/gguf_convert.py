"""Turn a .gguf file into a plain transformers folder (safetensors + tokenizer.json + config.json).

transformers dequantizes a GGUF on every load (~40 s for SmolLM2-135M); the safetensors written
here load in about a second, so each GGUF is converted once and the folder is kept in the cache.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from phi3_lsp.errors import ModelSourceError
from phi3_lsp.load_stops import LoadStop
from phi3_lsp.paths import MANIFEST
from phi3_lsp.progress import ProgressCallback, ProgressUpdate
from phi3_lsp.token_flags import llama_cpp_rstrip, set_rstrip

ConfigFix = Callable[[Any], None]
StepHook = Callable[[float], None]

WEIGHT_FILE_SIZE = "1GB"
"""The most fp32 weights a converted file holds: a Phi-3-mini GGUF's 15 GB are written in 16
files, between which the conversion reports how far it is and can stop."""

WRITING_SHARE = 0.2
"""The part of a conversion's time spent writing its weights (SmolLM2's: 0.55 s of 2.85 s once
the tokenizer is made); dequantizing takes the rest."""


def validate_gguf(path: Path) -> None:
    """Fail with a clear message unless `path` is a complete, readable GGUF file."""
    import gguf

    with path.open("rb") as file:
        magic = file.read(4)
    if magic != b"GGUF":
        raise ModelSourceError(
            f"{path} is not a GGUF file (it does not start with the GGUF header). "
            "Set phi3.model to a .gguf model file, a model folder, a hub id, or smollm2-135m."
        )
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises whatever numpy raises on short data
        raise ModelSourceError(
            f"GGUF file {path} is truncated or corrupt ({type(exc).__name__}: {exc}). "
            "Download it again, or set phi3.model to another model."
        ) from exc
    if not reader.tensors:
        # A vocabulary-only file (as llama.cpp ships for tests): transformers would fill every
        # weight with random values, some 15 GB for Phi-3-mini, and complete with gibberish.
        raise ModelSourceError(
            f"GGUF file {path} holds a vocabulary but no weights. "
            "Set phi3.model to a .gguf model file, a model folder, a hub id, or smollm2-135m."
        )


def convert_gguf(
    gguf_path: Path,
    dest: Path,
    *,
    with_weights: bool,
    fix_config: ConfigFix | None = None,
    tokenizer_dir: Path | None = None,
    before_step: StepHook | None = None,
) -> None:
    """Write tokenizer, config and (`with_weights`) fp32 safetensors of `gguf_path` to `dest`;
    the tokenizer's added tokens strip whitespace as llama.cpp's do (see `token_flags`).

    `tokenizer_dir`: a conversion of the same file without weights, whose tokenizer is copied
    rather than made again (SmolLM2's: 1.5 s, building its 49,152-token vocabulary).
    `before_step`: called with the share of the weights' conversion done so far before each
    tensor is dequantized and each file of weights is written, and with 1.0 once all are
    written; what it raises ends the conversion (a Phi-3-mini GGUF's takes minutes). GGUF
    architectures that transformers loads otherwise than tensor by tensor get no calls while
    they dequantize.
    """
    with gguf_parsed_once(), _tensors_announced(before_step):
        _convert(
            gguf_path,
            dest,
            with_weights=with_weights,
            fix_config=fix_config,
            tokenizer_dir=tokenizer_dir,
            before_step=before_step,
        )


def conversion_hook(
    report: ProgressCallback,
    message: str,
    stop: LoadStop | None,
    within: tuple[float, float] = (0.0, 1.0),
) -> StepHook:
    """A `before_step` for `convert_gguf`: raises `LoadStopped` once `stop` is set while there
    is work left, and reports `message` with the share of the conversion done, mapped into
    `within`, once per percent (SmolLM2 has 272 tensors)."""
    shown = -1
    low, high = within

    def before_step(fraction: float) -> None:
        nonlocal shown
        if stop is not None and fraction < 1:
            stop.check()
        percent = int(100 * (low + (high - low) * fraction))
        if percent > shown:
            shown = percent
            report(ProgressUpdate("converting", message, percent / 100))

    return before_step


@contextlib.contextmanager
def _tensors_announced(before_step: StepHook | None) -> Iterator[None]:
    """Within the block (and `gguf_parsed_once`'s, whose lock keeps other threads out),
    transformers' loop over a GGUF's tensors calls `before_step` where it would draw its
    progress bar (the loop has no other hook), with the share dequantized scaled to the
    conversion's part before its writing."""
    if before_step is None:
        yield
        return
    from transformers import modeling_gguf_pytorch_utils

    gguf_loading: Any = modeling_gguf_pytorch_utils  # its `tqdm` is an import, not an export

    def announced(tensors: Iterable[Any], *_: Any, **__: Any) -> Iterator[Any]:
        listed = list(tensors)
        total = sum(tensor.n_elements for tensor in listed) or 1
        done = 0
        for tensor in listed:
            before_step((1 - WRITING_SHARE) * done / total)
            yield tensor
            done += tensor.n_elements

    progress_bar = gguf_loading.tqdm
    gguf_loading.tqdm = announced
    try:
        yield
    finally:
        gguf_loading.tqdm = progress_bar


_SWAPPING = threading.RLock()
"""One thread at a time in `gguf_parsed_once`, which swaps two functions of the gguf module
(and, within it, `_tensors_announced` and `_weight_files_announced` transformers' progress
bars)."""


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """Within the block, one gguf reader per file and one tensor-name table per architecture
    and depth, handed out again on every later call (a nested block shares its outer one's).

    transformers parses a GGUF's metadata anew for its tokenizer, its config and its weights
    (~2.4 s each here for SmolLM2's 49,152-token vocabulary, in pure Python) and builds the
    same tensor-name table for every module it maps (~400 times, ~13 ms each): SmolLM2's
    conversion took 17.3-18.2 s, and 8.5-9.4 s with each done once, writing the same files.
    Both are read-only once made, and transformers looks both up in the gguf module at each
    call, so they are swapped there for the block.
    """
    import gguf

    with _SWAPPING:
        if isinstance(gguf.GGUFReader, _OneReaderPerFile):
            yield  # within an outer block
            return
        reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
        gguf.GGUFReader = _OneReaderPerFile(reader_class)  # type: ignore[assignment,misc]
        gguf.get_tensor_name_map = functools.cache(name_map)
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map  # type: ignore[misc]


def llama_cpp_token_flags(gguf_path: Path) -> dict[int, bool]:
    """The rstrip flags llama.cpp gives the tokens of `gguf_path` (see `llama_cpp_rstrip`),
    from the reader of a conversion's `gguf_parsed_once` block where there is one."""
    import gguf

    with gguf_parsed_once():
        return llama_cpp_rstrip(gguf.GGUFReader(gguf_path))


class _OneReaderPerFile:
    """Stands in for `gguf.GGUFReader`: the reader made first for a file, on every call."""

    def __init__(self, reader_class: Any) -> None:
        self._reader_class = reader_class
        self._readers: dict[tuple[str, str], Any] = {}

    def __call__(self, path: str | Path, mode: Literal["r", "r+", "c"] = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in self._readers:
            self._readers[key] = self._reader_class(path, mode)
        return self._readers[key]


def _convert(
    gguf_path: Path,
    dest: Path,
    *,
    with_weights: bool,
    fix_config: ConfigFix | None,
    tokenizer_dir: Path | None,
    before_step: StepHook | None,
) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    if tokenizer_dir is None:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        tokenizer.save_pretrained(dest)
    else:
        _copy_tokenizer(tokenizer_dir, dest)
    # Also on a copy: `tokenizer_dir` may be an entry made before the flags were set.
    set_rstrip(dest, llama_cpp_token_flags(gguf_path))
    if not with_weights:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        if fix_config is not None:
            fix_config(config)
        config.save_pretrained(dest)
        return

    import torch
    from transformers.utils import logging as transformers_logging

    # Its bars ("Loading weights", "Writing model shards") would clutter the server's log and
    # the CLI's stderr; `before_step` reports how far it is instead.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("not serializable") while it still
    # carries the quantizer; its weights are already dequantized to plain tensors.
    model.hf_quantizer = None  # type: ignore[assignment]  # nn.Module types attributes narrowly
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if fix_config is not None:
        fix_config(model.config)
    with _weight_files_announced(before_step):
        model.save_pretrained(dest, max_shard_size=WEIGHT_FILE_SIZE)
    if before_step is not None:
        before_step(1.0)


@contextlib.contextmanager
def _weight_files_announced(before_step: StepHook | None) -> Iterator[None]:
    """Within the block, transformers' loop over the files `save_pretrained` writes on this
    thread calls `before_step` where it would draw its progress bar, with the share of the
    files written scaled to the conversion's writing part; other threads get their bars."""
    if before_step is None:
        yield
        return
    from transformers.utils import logging as transformers_logging

    logging_module: Any = transformers_logging  # its `tqdm` is typed as its own class
    writing_thread = threading.get_ident()
    progress_bar = logging_module.tqdm

    def announced(files: Iterable[Any]) -> Iterator[Any]:
        listed = list(files)
        for written, file in enumerate(listed):
            before_step(1 - WRITING_SHARE + WRITING_SHARE * written / len(listed))
            yield file

    def bar_or_announced(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != writing_thread or not args:
            return progress_bar(*args, **kwargs)
        return announced(args[0])

    logging_module.tqdm = bar_or_announced
    try:
        yield
    finally:
        logging_module.tqdm = progress_bar


def _copy_tokenizer(tokenizer_dir: Path, dest: Path) -> None:
    """The tokenizer's files of a conversion, copied into `dest`: not its config (the model's is
    written with the weights), the cache's manifest, nor a file left half-written (hidden)."""
    for file in tokenizer_dir.iterdir():
        if file.is_file() and file.name not in ("config.json", MANIFEST) and file.name[0] != ".":
            shutil.copy2(file, dest / file.name)
