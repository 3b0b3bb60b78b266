"""Holds the tokenizer and the model engine for the server: loading in the background (its
steps are in `load_steps`), the one model thread's jobs, supersession of completions, and the
status that clients see.

Nothing here knows LSP. The server passes a `HostListener`, called from the model thread, and
turns its calls into notifications. torch and transformers are imported by a load only, so
that starting the server (and answering `initialize`) stays fast.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from phi3_lsp.drafts_keeper import DraftsKeeper
from phi3_lsp.errors import ModelSourceError
from phi3_lsp.load_steps import LoadHooks, LoadRequest, load_engine
from phi3_lsp.load_stops import LoadStop, LoadStopped, wait_for_stopped_work
from phi3_lsp.memory_release import release_freed_memory
from phi3_lsp.model_thread import ModelThread
from phi3_lsp.progress import ProgressUpdate
from phi3_lsp.prompt_reading import PromptReading, PromptReadReports
from phi3_lsp.scheduling import torch_thread_count
from phi3_lsp.settings import WeightFormat
from phi3_lsp.stop_requests import StopRequest, TokenLimit

if TYPE_CHECKING:
    from phi3_lsp.engine import ModelEngine
    from phi3_lsp.generation import Generation, PromptRead
    from phi3_lsp.sources import ModelSource
    from phi3_lsp.tokens import DocumentTokenizer
    from phi3_lsp.weight_reads import WeightReads

logger = logging.getLogger(__name__)

State = Literal["loading", "ready", "generating", "error"]
RELEASE_AFTER_IDLE_SECONDS = 2.0
"""Freed memory goes back to the system once no job has come for this long. `malloc_trim` holds
the heap's lock while it works (~90 ms after a Phi-3-mini-sized answer to 1,500 tokens), and
the event loop's allocations wait for it: run as soon as a completion ended, it met the user's
first keystroke after it (typing through the suggestion answered in 89 ms, once)."""
DOWNLOAD_STOP_SECONDS = 1.0
"""How long the server's exit waits for a stopped download to see its stop, and delete the
part of a file it has written: it reads 10 MiB at a time (a second at 10 MB/s). VS Code's
client kills a server still running 2 s after `exit`, which would leave that part behind."""
LOAD_STOP_SECONDS = 1.5
"""How long the server's exit waits in all for a stopped load (its downloads included) to end: a
conversion sees its stop between two tensors or weight files, and then deletes what it wrote
(up to 15 GB for a Phi-3-mini GGUF). Within VS Code's 2 s, as `DOWNLOAD_STOP_SECONDS`."""


@dataclass(frozen=True)
class Status:
    """What the server is doing; sent to clients as `phi3/status` on every change."""

    state: State
    model: str
    message: str | None = None
    percentage: int | None = None
    weights_loaded: bool = False
    last_latency_ms: int | None = None
    last_tokens_per_second: float | None = None
    last_tokens: int | None = None
    last_decode_ms: int | None = None
    last_decode_passes: int | None = None
    int4_drafts: bool = False
    """fp32's decode passes check tokens drafted by the model's 4-bit copy (the same text);
    sent with the next change of state after they are loaded."""
    weights: WeightFormat | None = None
    """The weight format of the model loading or loaded (None before the first load)."""

    def to_json(self) -> dict[str, object]:
        """The notification's payload, in the protocol's camelCase."""
        return {
            "state": self.state,
            "model": self.model,
            "message": self.message,
            "percentage": self.percentage,
            "weightsLoaded": self.weights_loaded,
            "lastLatencyMs": self.last_latency_ms,
            "lastTokensPerSecond": self.last_tokens_per_second,
            "lastTokens": self.last_tokens,
            "lastDecodeMs": self.last_decode_ms,
            "lastDecodePasses": self.last_decode_passes,
            "int4Drafts": self.int4_drafts,
            "weights": self.weights,
        }


@dataclass(frozen=True)
class LoadOutcome:
    """How a load ended: `error` when nothing usable loaded, `hint` when weights are missing,
    `superseded` when a newer load made this one moot."""

    model: str
    error: str | None = None
    hint: str | None = None
    superseded: bool = False


@dataclass(frozen=True)
class FoundSource:
    """The source a load has found, before its weights have come (see `loading_source`)."""

    source: ModelSource
    weights: WeightFormat
    """The format its weights load in."""
    load: int
    """Which load found it: `ModelHost.loads_begun` as that load began."""


class HostListener(Protocol):
    """Receives the host's events; every method may be called from the model thread."""

    def status_changed(self, status: Status) -> None: ...

    def load_began(self, model: str) -> None: ...

    def load_progressed(self, update: ProgressUpdate) -> None: ...

    def load_ended(self, outcome: LoadOutcome) -> None: ...

    def prompt_read(self, reading: PromptReading) -> None: ...


class ModelHost:
    """The loaded model (or the one being loaded) and the completions it runs."""

    def __init__(self, listener: HostListener, model: str) -> None:
        self._listener = listener
        # Passes keep what they free for the next layer's reuse (see `memory_release`); it goes
        # back to the system once the model thread has had nothing to do for a while.
        self._thread = ModelThread(
            when_idle=release_freed_memory, idle_after=RELEASE_AFTER_IDLE_SECONDS
        )
        self._lock = threading.Lock()
        self._reports_lock = threading.Lock()
        """Held while a load's progress is reported and as a load begins: a superseded load's
        last report (from its download's thread) goes before the next load's beginning. Not
        `_lock`, which listeners may take, by calling the host back."""
        self._status = Status(state="loading", model=model, message="Waiting to start")
        self._load_id = 0
        self._loaded: LoadRequest | None = None
        self._tokenizer: DocumentTokenizer | None = None
        self._found: FoundSource | None = None
        """The source of the last load that found one."""
        self._engine: ModelEngine | None = None
        self._dropped_engine: ModelEngine | None = None
        """The previous model until the model thread frees it (see `_free_dropped_engine`)."""
        self._running: _RunningGeneration | None = None
        self._kept_for_running: list[_RunningGeneration] = []
        """Older generations still finishing a prompt pass that the running one (or one it
        superseded) reuses: a stop of the running one is theirs too (see
        `_stop_running_generation`)."""
        self._drafts = DraftsKeeper(self._thread)
        self._completions_on = True
        """`inlineCompletions`: off, nothing runs for completions (see `use_completions`)."""
        self._warm_up_owed = False
        """The loaded model came, or its warm-up was stopped, while completions were off: it
        warms up once they are on."""
        self._load_stop = LoadStop()
        self._load_stop.load_ended()  # no load has it: the first `load` makes its own
        self._stopped_loads: list[LoadStop] = []
        """Stops of superseded loads while setting them still stops something: a load kept
        for the same model in another format, or a download that has not seen its stop."""

    @property
    def status(self) -> Status:
        """The current status."""
        return self._with_drafts(self._status)

    @property
    def tokenizer(self) -> DocumentTokenizer | None:
        """The model's tokenizer, available before the weights finish loading."""
        return self._tokenizer

    @property
    def loading_source(self) -> FoundSource | None:
        """The source of the model being loaded, once found (its config is read then): it is
        known before its weights have come (Phi-3-mini's download takes minutes). None when no
        load is in progress or none has found it yet."""
        with self._lock:
            found = self._found
            if found is None or found.load != self._load_id or self._status.state != "loading":
                return None
            return found

    @property
    def loads_begun(self) -> int:
        """How many loads have begun: it changes as another model (or format) is chosen."""
        return self._load_id

    @property
    def engine(self) -> ModelEngine | None:
        """The loaded engine (possibly without weights), or None while loading or after an error."""
        return self._engine

    @property
    def context_length(self) -> int | None:
        """The loaded model's context length, in tokens; None while none is loaded."""
        engine = self._engine
        return None if engine is None else engine.context_length

    def can_generate(self) -> bool:
        """True when completions can run: an engine with weights is loaded."""
        engine = self._engine
        return engine is not None and engine.has_weights

    def load(
        self,
        model: str,
        *,
        threads: int = 0,
        weights: WeightFormat = "fp32",
        int4_drafts: bool = True,
        trust_remote_code: bool = False,
    ) -> bool:
        """Start loading `model` in the background unless it is already loaded or loading.

        Returns True when a load was started. The previous model is dropped at once, so that
        requests during the reload get empty answers instead of answers from the old model;
        its tokenizer keeps serving hovers when the model stays (only its weights change).
        A load that failed is not tried again for the same request: a change of some other
        setting would repeat the error (a restart of the server tries again). A change of the
        thread count or of `int4_drafts` alone loads nothing: the model moves to the new count,
        and takes or drops its 4-bit drafts, once the load or completion in progress ends. The
        drafts serve completions only: while they are off, none are taken (`use_completions`).
        After `shutdown` nothing loads: no one is left to use it.
        """
        request = LoadRequest(model, threads, weights, int4_drafts, trust_remote_code)
        with self._lock:
            if request == self._loaded:
                return False
            if self._thread.closed:
                logger.info("Settings changed after the shutdown: ignored")
                return False
            loaded = self._loaded
            if loaded is not None and request.keeps_the_model_of(loaded):
                self._loaded = request
                if threads != loaded.threads:
                    self._move_to_threads(threads)
                self._want_drafts()
                return False
            same_model = self._loaded is not None and request.model == self._loaded.model
            if not same_model:
                self._tokenizer = None  # another model's tokens: no hover until it is read
            self._loaded = request
            self._load_id += 1
            load_id = self._load_id
            stop = self._stop_load(keeping_its_download=same_model)
            if self._engine is not None:
                self._dropped_engine, self._engine = self._engine, None
            self._stop_running_generation()
            self._drafts.serve(None)
            self._want_drafts()
            self._set_status(
                Status(state="loading", model=model, message="Queued", weights=weights)
            )
        self._thread.submit(self._load, load_id, request, stop)
        return True

    def _stop_load(self, *, keeping_its_download: bool) -> LoadStop:
        """Called with the lock held: stop the load in progress (its download, which would
        hold up the model thread for as long as it lasts), unless the next load wants the same
        files (the same model in another format: a download stopped starts again from zero);
        returns the next load's stop."""
        stopped = [*self._stopped_loads, self._load_stop]
        if not keeping_its_download:
            for stop in stopped:  # a download kept for the same model before is moot too
                stop.set()
        self._stopped_loads = [stop for stop in stopped if stop.in_use()]
        self._load_stop = LoadStop()
        return self._load_stop

    def _move_to_threads(self, threads: int) -> None:
        """Called with the lock held: run on `threads` once the work queued before ends."""
        engine = self._engine
        if (
            engine is not None
            and engine.prompt_bits_depend_on_threads
            and torch_thread_count(threads) != engine.threads
        ):
            self._stop_reading_ahead()  # its prompt would be dropped with the count's change
        self._thread.submit(self._use_threads, self._load_id, threads)

    def supersede(self) -> None:
        """Stop the running completion, or the work ahead of one (a prompt read ahead, the
        warm-up): a newer request made it useless."""
        with self._lock:
            self._stop_running_generation()

    def use_completions(self, on: bool) -> None:
        """Completions were turned on or off (`inlineCompletions`). Off: the running completion
        and the work ahead of one stop, as on `supersede`; none starts (`generate` and
        `read_prompt` return None: a request past the settings check as they were turned off
        would run for nobody); and what serves completions only is not done: a model that
        loads meanwhile does not warm up (it keeps the CPU busy for a second, Phi-3-mini-
        sized), and the 4-bit drafts are dropped, or not taken (see `_want_drafts`). On again:
        a model loaded meanwhile, or whose warm-up they stopped, warms up (all of it), and takes
        its drafts. After `shutdown`, nothing."""
        with self._lock:
            if on == self._completions_on or self._thread.closed:
                return
            self._completions_on = on
            if not on:
                running = self._running
                if running is not None and running.warms_up:
                    # What it readies is the first completion's, as after a load while off.
                    self._warm_up_owed = True
                self._stop_running_generation()
                self._want_drafts()
                if self._status.state == "ready":
                    # Their drop said at once: no change of state may come to carry it while
                    # completions are off (see `_with_drafts`; a generation stopped now does,
                    # as it ends), and nothing runs whose end a "ready" could be taken for.
                    self._set_status(self._status)
                return
            owed, self._warm_up_owed = self._warm_up_owed, False
            engine = self._engine
            # Nothing runs: all stopped as they were turned off, and none started since.
            if owed and engine is not None and engine.has_weights:
                self._queue_warm_up(engine)
            self._want_drafts()  # after the warm-up, as after a load

    def _want_drafts(self) -> None:
        """Called with the lock held: take the 4-bit drafts while `int4Drafts` asks for them
        and completions are on. They draft for completions only, and cost memory (SmolLM2:
        ~150 MiB resident; Phi-3-mini: ~2.3 GB) and CPU (their load; where their layers are not
        cached, another process making them for up to a minute): a user who turns completions
        off to spare the machine has them given back at once. Turned on again, they load from
        the cache before the next completion, as after a load (SmolLM2: 0.12-0.17 s; Phi-3-mini-
        sized: 0.35-0.43 s once read from the disk); turned on before their drop ran, they stay.
        """
        loaded = self._loaded
        self._drafts.want(self._completions_on and loaded is not None and loaded.int4_drafts)

    def limit_new_tokens(self, tokens: int) -> None:
        """End the running completion (or its continuation in the background) once it has
        `tokens` new tokens, at once if it has them already: `maxNewTokens` was lowered. Its
        text is kept, as that of a completion asked for that many."""
        with self._lock:
            for generation in self._generations():
                if generation.limit is not None:
                    generation.limit.lower_to(tokens)

    async def generate(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int,
        cache_key: str,
        on_text: Callable[[str], None] | None = None,
        on_end: Callable[[Generation | None], None] | None = None,
        one_line: bool = False,
    ) -> Generation | None:
        """Greedy continuation of `prompt_ids` on the model thread (see `ModelEngine.generate`).

        Returns None when no model with weights is loaded, while completions are off, or when
        a newer request superseded this one. It stops the running generation, which first
        finishes a pass over prompt tokens this one begins with (same `cache_key`): this
        request would compute them again.
        If the awaiting task is cancelled, the generation stops after its pass in flight over
        the prompt (the next request on the document is likely to need it), or within a layer.
        `on_text` receives the text as it is generated, and `on_end` what is returned (the
        generation, or None if it was stopped), on the model thread: `on_end` before the status
        says the model is ready, so that a client's next request finds the generation ended.
        """
        engine = self._engine
        if engine is None or not engine.has_weights:
            return None
        stop, limit = StopRequest(), TokenLimit(max_new_tokens)
        with self._lock:
            if not self._completions_on:
                return None  # asked before they were turned off: nobody would see its text
            self._stop_running_generation(keeping=prompt_ids, cache_key=cache_key)
            self._running = _RunningGeneration(stop, cache_key, limit=limit)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        generation = loop.run_in_executor(
            self._thread,
            self._generate,
            engine,
            prompt_ids,
            limit,
            cache_key,
            stop,
            started,
            on_text,
            on_end,
            one_line,
        )
        del engine  # its job holds it: see `_free_dropped_engine`
        try:
            return await generation
        except asyncio.CancelledError:
            stop.stop_keeping(prompt_ids)  # it may still run: `_running` keeps it until it ends
            raise

    async def read_prompt(self, prompt_ids: list[int], *, cache_key: str) -> PromptRead | None:
        """Read `prompt_ids` ahead of a completion that may ask for them, on the model thread
        (see `ModelEngine.read_prompt`); its reading is reported as a completion's is.

        A guess at what the user will do next never stops a completion: returns None at once
        while one runs (or its continuation in the background), when no model with weights is
        loaded, and while completions are off. A newer read or completion stops this one,
        sparing a prompt pass in flight over tokens it begins with; so does cancelling the
        awaiting task. Also None when stopped before it began. The status does not change:
        nothing is generated.
        """
        engine = self._engine
        if engine is None or not engine.has_weights:
            return None
        stop = StopRequest()
        with self._lock:
            if not self._completions_on or (self._running is not None and not self._running.ahead):
                return None
            self._stop_running_generation(keeping=prompt_ids, cache_key=cache_key)
            self._running = _RunningGeneration(stop, cache_key, ahead=True)
        loop = asyncio.get_running_loop()
        reading = loop.run_in_executor(
            self._thread, self._read_prompt, engine, prompt_ids, cache_key, stop
        )
        del engine  # its job holds it: see `_free_dropped_engine`
        try:
            return await reading
        except asyncio.CancelledError:
            stop.stop_keeping(prompt_ids)
            raise

    def forget_document(self, uri: str) -> None:
        """Stop its generation and free what the engine keeps for a closed document (its
        prompt's keys and values)."""
        with self._lock:
            if any(running.cache_key == uri for running in self._generations()):
                self._stop_running_generation()
        engine = self._engine
        if engine is not None and not self._thread.closed:
            self._thread.submit(engine.forget_prompt, uri)

    def read_weights(self) -> Future[WeightReads | None] | None:
        """Time reads of the model's weights on the model thread, after the jobs already
        queued, never beside a pass. None while no model with weights is loaded; the future
        holds None when another model replaced it first."""
        engine = self._engine
        if engine is None or not engine.has_weights:
            return None
        return self._thread.submit(self._read_weights, engine)

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Stop the running generation, take no more jobs, and wait for the model thread.

        A generation stops within a decoder layer. A load is waited for only briefly: nothing
        it makes is of use once the server is gone. Its download or conversion is stopped, and
        given up to `LOAD_STOP_SECONDS` in all to delete what it wrote (downloads up to
        `DOWNLOAD_STOP_SECONDS`). Returns False when a thread is still busy: the model thread
        after that during a load, otherwise after `timeout` seconds; a download that has not
        seen its stop.
        """
        with self._lock:
            self._stop_running_generation()
            self._drafts.serve(None)
            loading = self._status.state == "loading"
            stops = [*self._stopped_loads, self._load_stop]
            # Under the lock: a drafter load queued from another thread checks, then submits.
            self._thread.shutdown(wait=False)
        # The download's workers would hold the interpreter's exit until the download ends.
        deadline = time.monotonic() + LOAD_STOP_SECONDS
        downloads_ended = wait_for_stopped_work(stops, DOWNLOAD_STOP_SECONDS)
        if loading:  # a stopped load that ends in time deletes what it was writing
            timeout = max(0.0, deadline - time.monotonic())
        # torch aborts the process ("terminate called without an active exception") when the
        # interpreter exits while a daemon thread is inside an operator, or importing torch
        # (during a load, which may have left the model thread already: a stopped download).
        return self._thread.join(timeout) and downloads_ended

    # --- on the model thread -------------------------------------------------------------

    def _generate(
        self,
        engine: ModelEngine,
        prompt_ids: list[int],
        limit: TokenLimit,
        cache_key: str,
        stop: threading.Event,
        started: float,
        on_text: Callable[[str], None] | None,
        on_end: Callable[[Generation | None], None] | None,
        one_line: bool,
    ) -> Generation | None:
        # Superseded while queued: skip the work entirely, so only the latest request runs.
        if stop.is_set() or engine is not self._engine:
            self._forget_running(stop)
            return None
        self._update_status(state="generating")
        generation: Generation | None = None
        prompt_reports = PromptReadReports(self._listener.prompt_read)
        try:
            generation = engine.generate(
                prompt_ids,
                max_new_tokens=limit.tokens,
                limit=limit,
                stop_event=stop,
                on_text=on_text,
                cache_key=cache_key,
                one_line=one_line,
                on_prompt_read=prompt_reports,
            )
        finally:
            prompt_reports.end()
            stopped = generation is None or generation.finish_reason == "stopped"
            if on_end is not None:
                on_end(None if stopped else generation)
            self._forget_running(stop)
            self._finish_generation(engine, generation, started)
        return None if stopped else generation

    def _read_prompt(
        self, engine: ModelEngine, prompt_ids: list[int], cache_key: str, stop: StopRequest
    ) -> PromptRead | None:
        if stop.is_set() or engine is not self._engine:
            self._forget_running(stop)
            return None
        prompt_reports = PromptReadReports(self._listener.prompt_read)
        try:
            return engine.read_prompt(
                prompt_ids, cache_key=cache_key, stop_event=stop, on_prompt_read=prompt_reports
            )
        finally:
            prompt_reports.end()
            self._forget_running(stop)

    def _read_weights(self, engine: ModelEngine) -> WeightReads | None:
        return engine.read_weights() if engine is self._engine else None

    def _finish_generation(
        self, engine: ModelEngine, generation: Generation | None, started: float
    ) -> None:
        with self._lock:
            if engine is not self._engine:
                return  # a reload replaced this engine and owns the status now
            if generation is None or generation.finish_reason == "stopped":
                self._set_status(replace(self._status, state="ready"))
                return
            tokens = len(generation.token_ids)
            speed = generation.decode_tokens_per_second
            self._set_status(
                replace(
                    self._status,
                    state="ready",
                    last_latency_ms=round((time.perf_counter() - started) * 1000),
                    last_tokens_per_second=round(speed, 2) if speed is not None else None,
                    last_tokens=tokens,
                    last_decode_ms=round(generation.decode_seconds * 1000),
                    last_decode_passes=generation.decode_passes,
                )
            )

    def _load(self, load_id: int, request: LoadRequest, stop: LoadStop) -> None:
        try:
            self._run_load(load_id, request, stop)
        finally:
            stop.load_ended()  # no longer kept to be set (see `_stop_load`)

    def _run_load(self, load_id: int, request: LoadRequest, stop: LoadStop) -> None:
        model = request.model
        if load_id != self._load_id:
            return  # a newer load is queued behind this one
        with self._reports_lock:
            self._listener.load_began(model)
        engine: ModelEngine | None = None
        self._free_dropped_engine()
        # Imports and the model make ~400,000 objects, and the collector's full passes over
        # those made so far (6 or 7 in a SmolLM2 load, 10 to 140 ms each) added ~0.5 s to it.
        gc.disable()
        try:
            engine, hint = load_engine(request, stop, self._hooks_of_load(load_id, request))
            _freeze_loaded_objects()
            has_weights = engine.has_weights
            status = Status(
                state="ready",
                model=model,
                message=hint,
                weights_loaded=has_weights,
                weights=request.weights,
            )
            outcome = LoadOutcome(model=model, hint=hint)
        except LoadStopped:  # by a newer load, or the server's exit
            with self._reports_lock:  # after its download's last report, if any came late
                self._listener.load_ended(LoadOutcome(model=model, superseded=True))
            return
        except Exception as error:
            message = load_error_message(model, error)
            if isinstance(error, ModelSourceError):
                logger.warning("%s", message)  # the user's to fix: no traceback needed
            else:
                logger.exception("Loading %s failed", model)
            status = Status(state="error", model=model, message=message, weights=request.weights)
            outcome = LoadOutcome(model=model, error=message)
        finally:
            gc.enable()
        with self._lock:
            if load_id != self._load_id:
                self._listener.load_ended(replace(outcome, superseded=True))
                return
            # The outcome first: a client that sees "ready" or "error" has had the message.
            self._listener.load_ended(outcome)
            self._engine, self._warm_up_owed = engine, False
            if engine is not None and engine.has_weights:
                self._thread.submit(self._hold_weights_compactly, engine)
                self._queue_warm_up(engine)
            if engine is not None:
                # Before the status says ready: a completion asked on seeing it comes after
                # the drafts (when their load reads their files itself), not before them.
                self._drafts.serve(engine)
            self._set_status(status)

    def _free_dropped_engine(self) -> None:
        """On the model thread, once the work queued before the reload has ended with it: free
        the previous model. Its memory goes back to the system here, holding the GIL (Phi-3-mini
        fp32: ~0.5 s), which would otherwise read as "Queued". Nothing else may hold the engine
        then: requests awaiting the model thread keep no reference to it (the jobs do), and
        read what they need of it through the host (`context_length`)."""
        with self._lock:
            dropped, self._dropped_engine = self._dropped_engine, None
            if dropped is not None:
                self._set_status(replace(self._status, message="Freeing the previous model"))
        del dropped  # the last reference: its memory goes now

    def _queue_warm_up(self, engine: ModelEngine) -> None:
        """Called with the lock held, as a load ends (before the status says ready) or as
        completions are turned on: warm the model up on its thread (see `ModelEngine.warm_up`)
        unless a request comes first; while completions are off, once they are on.

        Ready is said before it (Phi-3-mini-sized fp32: ~1.1 s of 3.8 s from spawn), so that a
        completion asked meanwhile stops it within a layer and runs at once, paying only the
        part of the warm-up it needs (the weights' first reads), instead of getting no answer.
        """
        if not self._completions_on:
            self._warm_up_owed = True
            return
        stop = StopRequest()
        self._running = _RunningGeneration(stop, cache_key="", ahead=True)
        self._thread.submit(self._warm_up, engine, stop)

    def _hold_weights_compactly(self, engine: ModelEngine) -> None:
        """On the model thread, first after a load: see `ModelEngine.hold_weights_compactly`. A
        completion asked meanwhile waits for it (~0.15 s), then runs on the weights so held."""
        try:
            if engine is self._engine:
                engine.hold_weights_compactly()
        except Exception:
            # The weights stay as they were loaded, with the same results, only slower.
            logger.exception("Holding the weights of %s compactly failed", engine.name)

    def _warm_up(self, engine: ModelEngine, stop: StopRequest) -> None:
        try:
            if not stop.is_set() and engine is self._engine:
                engine.warm_up(stop)
        except Exception:
            # The first completion pays what it skipped; a real fault shows there again.
            logger.exception("The warm-up of %s failed", engine.name)
        finally:
            self._forget_running(stop)

    def _hooks_of_load(self, load_id: int, request: LoadRequest) -> LoadHooks:
        """Where the steps of the load `load_id` report, and hand over what they have read."""
        return LoadHooks(
            progressed=lambda update: self._report_load_progress(load_id, update),
            is_current=lambda: load_id == self._load_id,
            source_found=lambda source: self._take_source(load_id, source, request.weights),
            tokenizer_read=lambda tokenizer: self._take_tokenizer(load_id, tokenizer),
        )

    def _report_load_progress(self, load_id: int, update: ProgressUpdate) -> None:
        """Show the load `load_id`'s step, unless a newer load has begun."""
        percentage = None if update.fraction is None else round(update.fraction * 100)
        with self._reports_lock:
            with self._lock:  # a newer load's first status comes after this one's
                if load_id != self._load_id:
                    return  # e.g. a stopped download's, before it has seen its stop
                loading = replace(self._status, state="loading", message=update.message)
                self._set_status(replace(loading, percentage=percentage))
            self._listener.load_progressed(update)

    def _take_source(self, load_id: int, source: ModelSource, weights: WeightFormat) -> None:
        """Keep the source the load `load_id` has found (see `loading_source`)."""
        with self._lock:
            self._found = FoundSource(source, weights, load_id)

    def _take_tokenizer(self, load_id: int, tokenizer: DocumentTokenizer) -> None:
        """Serve hovers with the tokenizer just read, unless a newer load has begun."""
        with self._lock:
            if load_id == self._load_id:
                self._tokenizer = tokenizer

    def _use_threads(self, load_id: int, threads: int) -> None:
        """On the model thread, after the load `load_id` (queued before): run on `threads`."""
        engine = self._engine
        if load_id != self._load_id or engine is None:
            return
        try:
            engine.use_threads(threads)
        except Exception:
            logger.exception("%s could not move to %d torch threads", engine.name, threads)

    # --- status ----------------------------------------------------------------------------

    def _update_status(self, **changes: Any) -> None:
        with self._lock:
            self._set_status(replace(self._status, **changes))

    def _set_status(self, status: Status) -> None:
        # Called with the lock held, so listeners see the states in the order they happened.
        status = self._with_drafts(status)
        if status != self._status:
            self._status = status
            self._listener.status_changed(status)

    def _with_drafts(self, status: Status) -> Status:
        """`status` saying whether the model decodes with its 4-bit drafts now. Their taking or
        dropping is not a change of state of its own: clients that wait for "ready" after a
        request would take it for the request's end. The next status carries it."""
        in_use = self._drafts.in_use
        return status if status.int4_drafts == in_use else replace(status, int4_drafts=in_use)

    def _forget_running(self, stop: threading.Event) -> None:
        """The generation stopped by `stop` has ended: nothing is left to stop."""
        with self._lock:
            if self._running is not None and self._running.stop is stop:
                self._running = None
            self._kept_for_running = [
                kept for kept in self._kept_for_running if kept.stop is not stop
            ]

    def _generations(self) -> list[_RunningGeneration]:
        """Called with the lock held: the running generation and those whose pass it keeps."""
        running = [] if self._running is None else [self._running]
        return [*self._kept_for_running, *running]

    def _stop_reading_ahead(self) -> None:
        """Called with the lock held: stop a prompt's read ahead, if running (not the warm-up,
        which keeps no prompt and readies what the first completion would)."""
        running = self._running
        if running is not None and running.ahead and running.cache_key:
            self._stop_running_generation()

    def _stop_running_generation(
        self, keeping: Sequence[int] = (), cache_key: str | None = None
    ) -> None:
        """Stop the running generation; a pass over prompt tokens that `keeping` begins with,
        for the same `cache_key`, finishes first.

        Older generations that finish such a pass for the running one are stopped alike: the
        request they finish it for may itself be stopped (a reload, the document closed, the
        exit), and then nothing needs their pass. Those still finishing one are kept for the
        next request, which is to reach them in turn.
        """
        generations = self._generations()
        self._running, self._kept_for_running = None, []
        for generation in generations:
            if keeping and generation.cache_key == cache_key:
                generation.stop.stop_keeping(keeping)
                self._kept_for_running.append(generation)
            else:
                generation.stop.set()


@dataclass(frozen=True)
class _RunningGeneration:
    stop: StopRequest
    cache_key: str
    ahead: bool = False
    """Work ahead of requests (reading a prompt ahead, the warm-up): none waits on it, and any
    newer request stops it."""
    limit: TokenLimit | None = None
    """A completion's token limit, which a lower `maxNewTokens` lowers while it runs."""

    @property
    def warms_up(self) -> bool:
        """Whether this is the warm-up (see `_queue_warm_up`): work ahead that keeps no prompt."""
        return self.ahead and not self.cache_key


def _freeze_loaded_objects() -> None:
    """Move the objects of imports and the loaded model out of the garbage collector's reach.

    There are ~400,000 of them with SmolLM2 (torch, transformers, the module tree), and a full
    collection walks them all: 190 ms measured, during which no request is answered. They live
    until the next load, which frees them as their last reference goes: a model holds no
    reference cycles (tested), so frozen ones need no collection. A load leaves almost no
    garbage behind (78 objects, no memory measured with SmolLM2), so neither a collection
    during the load nor one before freezing is needed.
    """
    gc.freeze()


def load_error_message(model: str, error: Exception) -> str:
    """The message a user sees when a model cannot load."""
    if isinstance(error, ModelSourceError):
        return str(error)
    return (
        f"Could not load {model}: {_one_line(error)}. Set phi3.model to a hub id, a local folder, "
        'a .gguf file, or "smollm2-135m".'
    )


_ONE_LINE_LIMIT = 300


def _one_line(error: Exception) -> str:
    """An error's message as one line a pop-up can show: transformers' run to several lines,
    the cause first and then advice, so a long one is cut after its first sentences."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    text = text or type(error).__name__
    if len(text) > _ONE_LINE_LIMIT:
        sentence_end = text.rfind(". ", 0, _ONE_LINE_LIMIT)
        text = text[: sentence_end + 1] if sentence_end > 0 else text[:_ONE_LINE_LIMIT] + "…"
    return text.rstrip(".")
