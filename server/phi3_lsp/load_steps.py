"""A model's load, step by step: find its source, read its tokenizer while torch and
transformers are imported beside it, fetch a hub model's weights (or convert a .gguf file's),
then load the engine.

The host runs the steps on the model thread and hears of them through a `LoadHooks`: progress,
the source once found, the tokenizer once read (hovers need no weights). The steps that take
long leave the load once it is moot: its `LoadStop` is set (a newer load, the server's exit), or
a newer load of the same model has begun (`LoadHooks.is_current`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from phi3_lsp.load_stops import LoadStop, LoadStopped
from phi3_lsp.model_thread import ModelThread
from phi3_lsp.progress import ProgressCallback, ProgressUpdate
from phi3_lsp.settings import WeightFormat

if TYPE_CHECKING:
    from phi3_lsp.engine import ModelEngine
    from phi3_lsp.sources import ModelSource
    from phi3_lsp.tokens import DocumentTokenizer


@dataclass(frozen=True)
class LoadRequest:
    """What to load and how: a new request (not an equal one) means loading again."""

    model: str
    threads: int
    weights: WeightFormat
    int4_drafts: bool
    trust_remote_code: bool

    def keeps_the_model_of(self, other: LoadRequest) -> bool:
        """Whether `other`'s model serves this request as it is: only how it runs differs (the
        thread count, the 4-bit drafts), not what is loaded."""
        return replace(self, threads=other.threads, int4_drafts=other.int4_drafts) == other


@dataclass(frozen=True)
class LoadHooks:
    """The host's side of one load: where its steps report, and hand over what they have read.
    Called on the model thread; `progressed` also on a download's thread."""

    progressed: ProgressCallback
    """Shows a step's progress, unless a newer load has begun."""
    is_current: Callable[[], bool]
    """False once a newer load has begun."""
    source_found: Callable[[ModelSource], None]
    """The model's source is known, its config readable, before its weights have come."""
    tokenizer_read: Callable[[DocumentTokenizer], None]
    """Hovers may use the tokenizer now, unless a newer load has begun."""


def load_engine(
    request: LoadRequest, stop: LoadStop, hooks: LoadHooks
) -> tuple[ModelEngine, str | None]:
    """Resolve, load the tokenizer, fetch a hub model's weights (or convert a .gguf file's),
    then load the engine; returns it and the missing-weights hint.

    Called with the garbage collector disabled (see `ModelHost._load`), which it enables only
    while the weights come. Raises `LoadStopped` before the weights load once `stop` is set (at
    once during a download), or once a newer load has begun (the same model, after its
    download); and, while it waits for another process's 4-bit layers, once either holds.
    """
    # The tokenizer needs neither torch nor transformers: hovers work seconds before the
    # first load has imported them.
    from phi3_lsp.sources import fetch_weights, parsed_once, resolve_model
    from phi3_lsp.tokens import DocumentTokenizer

    hooks.progressed(ProgressUpdate("loading", f"Finding {request.model}"))
    # A hub model's weights are gigabytes (Phi-3-mini's: 7.6 GB), its tokenizer and config a
    # few MB; a .gguf file's weights take long to convert (SmolLM2's: ~10 s), its tokenizer
    # and config come from its metadata: hovers work from the tokenizer on.
    with parsed_once(request.model):  # a GGUF's metadata, read once for both
        source = resolve_model(
            request.model,
            progress=hooks.progressed,
            trust_remote_code=request.trust_remote_code,
            weights="later",
            stop=stop,
        )
        hooks.source_found(source)  # before the status that wakes the requests waiting for it
        # torch and transformers are imported on a thread of their own (seconds, on the
        # first load, holding the GIL) while this one reads the tokenizer's file, which is
        # parsed without it: a tokenizer that cannot be read is reported at once.
        hooks.progressed(ProgressUpdate("loading", "Starting torch and transformers"))
        importer = ModelThread(name="phi3-imports")  # a daemon: it never holds up an exit
        importing = importer.submit(_engine_class)
        importer.shutdown(wait=False)  # an error below must not wait for the imports
        tokenizer = DocumentTokenizer.from_dir(source.tokenizer_dir)
        hooks.tokenizer_read(tokenizer)
        # Superseded while the tokenizer was read: no download to begin.
        _check_still_current(stop, hooks)
        if source.weights_pending:
            # A download, or a GGUF file's conversion, lasts minutes for Phi-3-mini, with
            # hovers answered meanwhile: their garbage is collected as usual.
            gc.enable()
        try:
            source = fetch_weights(source, progress=hooks.progressed, stop=stop)
        finally:
            gc.disable()
    engine_class = importing.result()
    _check_still_current(stop, hooks)
    engine = engine_class.load(
        source,
        tokenizer=tokenizer,
        threads=request.threads,
        weights=request.weights,
        progress=hooks.progressed,
        # A wait for another process's 4-bit layers keeps no download for a newer load of the
        # same model (another `weights`): it ends for that too.
        stop=_CurrentLoad(stop, hooks),
    )
    return engine, None if engine.has_weights else engine.source.missing_weights_hint


@dataclass(frozen=True)
class _CurrentLoad:
    """A `StopCheck` that also says a load is no longer wanted once a newer one has begun."""

    stop: LoadStop
    hooks: LoadHooks

    def check(self) -> None:
        _check_still_current(self.stop, self.hooks)


def _check_still_current(stop: LoadStop, hooks: LoadHooks) -> None:
    """Raise `LoadStopped` once `stop` is set, or once a newer load has begun: the same model
    asked again keeps this load's download, and its stop (see `ModelHost._stop_load`)."""
    stop.check()
    if not hooks.is_current():
        raise LoadStopped


def _engine_class() -> type[ModelEngine]:
    from phi3_lsp.engine import ModelEngine  # imports torch and transformers

    return ModelEngine
