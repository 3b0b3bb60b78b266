"""The loaded model's 4-bit drafts, taken while `phi3.int4Drafts` and completions are on.

An fp32 model decodes faster with a 4-bit copy of itself drafting tokens for its passes to check
(see `ModelEngine.load_drafter`). Taking them is several steps, any of which a newer model or a
change of the settings can make useless: their files are read ahead from the disk on a thread of
their own (Phi-3-mini: 2.3 GB, ~5 s from a cold disk, which would hold up completions on the
model thread), they load on the model thread, and where their 4-bit layers are not made yet and
making them there would take too long (Phi-3-mini: 35-50 s), another process makes them first.

The host says which model is served and whether its drafts are wanted; each step checks both
when it runs, under this keeper's lock, so the steps of an older model or setting do nothing.
"""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from typing import TYPE_CHECKING

from phi3_lsp.int4_layers_process import Int4LayersProcess
from phi3_lsp.memory_release import release_freed_memory
from phi3_lsp.read_ahead import READ_AHEAD_FROM_BYTES, read_ahead, total_bytes
from phi3_lsp.scheduling import HIGHEST_NICE, lower_current_thread_priority

if TYPE_CHECKING:
    from phi3_lsp.engine import ModelEngine
    from phi3_lsp.model_thread import ModelThread

logger = logging.getLogger(__name__)


class DraftsKeeper:
    """Takes and drops the 4-bit drafts of the model it serves; its jobs run on `thread`."""

    def __init__(self, thread: ModelThread) -> None:
        self._thread = thread
        # Its own: the host calls in holding its lock, but nothing here calls the host.
        self._lock = threading.Lock()
        self._engine: ModelEngine | None = None
        self._wanted = False
        self._layers_process: Int4LayersProcess | None = None
        self._in_use = False

    @property
    def in_use(self) -> bool:
        """Whether the model decodes with its drafts (they loaded, and are still wanted)."""
        return self._in_use

    def serve(self, engine: ModelEngine | None) -> None:
        """From now on, the drafts of `engine`: the model just loaded, or None while another
        loads (or at shutdown). An older model's steps stop, and its layers' process ends."""
        with self._lock:
            if engine is self._engine:
                return
            self._engine = engine
            self._in_use = False
            self._stop_making_layers()
            if engine is not None and self._wanted:
                self._take(engine)

    def want(self, wanted: bool) -> None:
        """The settings as they are now: take the drafts of the model served, or drop them
        (and stop the making of their layers). A model still loading takes them or not as the
        settings are when it is served."""
        with self._lock:
            if wanted == self._wanted:
                return
            self._wanted = wanted
            engine = self._engine
            if wanted:
                if engine is not None:
                    self._take(engine)
                return
            self._stop_making_layers()
            # Every completion asked from now on runs after the drop.
            self._in_use = False
            if engine is not None and not self._thread.closed:
                self._thread.submit(self._drop, engine)

    # --- with the lock held -----------------------------------------------------------------

    def _serves(self, engine: ModelEngine) -> bool:
        """Whether `engine`'s drafts are still wanted, and the model thread still takes jobs.
        Asked without the lock, an answer may be stale: drafts loaded on one are dropped by the
        job that the change queued, after the load on the same thread."""
        return engine is self._engine and self._wanted and not self._thread.closed

    def _still_serves(self, engine: weakref.ref[ModelEngine]) -> bool:
        served = engine()
        return served is not None and self._serves(served)

    def _take(self, engine: ModelEngine) -> None:
        """Load the drafts on the model thread, once their files are read (larger ones on a
        thread of their own, behind completions and the editor; smaller ones the load reads)."""
        files = engine.drafter_files()
        if total_bytes(files) < READ_AHEAD_FROM_BYTES:
            self._queue_load(engine)
            return

        # Weakly: a thread at the lowest priority may run on after its model was dropped, and
        # would hold it in memory beside the next one.
        served = weakref.ref(engine)

        def read_then_load() -> None:
            lower_current_thread_priority(HIGHEST_NICE)
            read_ahead(files, keep_going=lambda: self._still_serves(served))
            with self._lock:
                if (engine := served()) is not None:
                    self._queue_load(engine)

        threading.Thread(target=read_then_load, name="phi3-read-ahead", daemon=True).start()

    def _queue_load(self, engine: ModelEngine) -> None:
        if self._serves(engine):
            self._thread.submit(self._load, engine)

    def _make_layers(self, engine: ModelEngine) -> None:
        """Have another process make the 4-bit layers, unless one already does; once it has,
        load the drafts (unless it was stopped meanwhile: another model, or drafts turned off).
        """
        if not self._serves(engine) or self._layers_process is not None:
            return

        def ended(made: bool) -> None:  # on the process's waiting thread
            with self._lock:  # as `process` is assigned under it, it is read under it
                if process is not self._layers_process:
                    return
                self._layers_process = None
                if made:
                    self._queue_load(engine)

        process = Int4LayersProcess(engine.source.spec, on_end=ended)
        self._layers_process = process

    def _stop_making_layers(self) -> None:
        if self._layers_process is not None:
            self._layers_process.stop()
            self._layers_process = None

    # --- on other threads -------------------------------------------------------------------

    def _load(self, engine: ModelEngine) -> None:
        """On the model thread: load the drafts. Without them it decodes as it did, slower."""
        if not self._serves(engine):
            return
        try:
            loaded = engine.load_drafter()
            made_elsewhere = not loaded and engine.wants_int4_layers()
        except Exception:
            logger.exception("%s decodes without 4-bit drafts: they failed to load", engine.name)
            return
        # Out of the collector's walks, as the model's own objects (they hold no cycles, so
        # their drop frees them): see `model_host._freeze_loaded_objects`.
        gc.freeze()
        with self._lock:
            if made_elsewhere:
                self._make_layers(engine)
            elif self._serves(engine):
                self._in_use = loaded
            # Turned off meanwhile: the job queued then drops them.

    def _drop(self, engine: ModelEngine) -> None:
        """On the model thread: decode without the drafts, and give their memory back (at once:
        they hold no reference cycles)."""
        if engine is not self._engine or self._wanted or not engine.drafts_from_int4:
            return  # another model, turned on again, or never taken
        engine.drop_drafter()
        release_freed_memory()
