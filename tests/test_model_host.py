"""The model host with a tiny real Phi-3: background loading, status, supersession, errors."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from filelock import FileLock

from local_hub import LocalHub
from phi3_lsp import drafts_keeper, int4_cache, paths
from phi3_lsp import engine as engine_module
from phi3_lsp import model_host as model_host_module
from phi3_lsp.engine import ModelEngine
from phi3_lsp.generation import PREFILL_CHUNK_TOKENS, Generation
from phi3_lsp.model_host import LoadOutcome, ModelHost, Status
from phi3_lsp.model_thread import ModelThread
from phi3_lsp.progress import ProgressUpdate
from phi3_lsp.prompt_reading import SHOWN_AFTER_SECONDS, PromptReading
from phi3_lsp.sources import resolve_model
from phi3_lsp.stoppable_passes import decoder_layers
from test_model_drafts import NO_INT4_DRAFTS_HERE

LOAD_TIMEOUT = 120.0
HUB_REPO = "phi3-lsp-tests/tiny-phi3"  # as `holding_hub` serves it
LARGE_REPO = "phi3-lsp-tests/large-weights"  # as `xet_hub` serves it
PROMPT_IDS = [1, 450, 7483, 310, 3444, 338]  # BOS + "The capital of France is" in Phi-3


class RecordingListener:
    """Keeps what the host reports, and wakes the test when a load ends."""

    def __init__(self) -> None:
        self.statuses: list[Status] = []
        self.began: list[str] = []
        self.progress: list[ProgressUpdate] = []
        self.outcomes: list[LoadOutcome] = []
        self.readings: list[PromptReading] = []
        self.collector_on_while_loading: list[bool] = []
        self.load_done = threading.Event()
        self._status_changed = threading.Condition()
        self._statuses_at_load_end = 0

    def status_changed(self, status: Status) -> None:
        with self._status_changed:
            self.statuses.append(status)
            self._status_changed.notify_all()

    def load_began(self, model: str) -> None:
        self.began.append(model)

    def load_progressed(self, update: ProgressUpdate) -> None:
        self.progress.append(update)
        self.collector_on_while_loading.append(gc.isenabled())

    def load_ended(self, outcome: LoadOutcome) -> None:
        with self._status_changed:
            self.outcomes.append(outcome)
            self._statuses_at_load_end = len(self.statuses)
        self.load_done.set()

    def prompt_read(self, reading: PromptReading) -> None:
        self.readings.append(reading)

    def wait_for_status(self, accept: Callable[[Status], bool]) -> None:
        """Wait until a status that `accept`s has come."""
        with self._status_changed:
            found = self._status_changed.wait_for(
                lambda: any(accept(status) for status in self.statuses), LOAD_TIMEOUT
            )
        assert found

    def wait_for_load(self) -> LoadOutcome:
        """Wait until a load has ended and, unless superseded, the host has taken its outcome
        in: the status that follows the outcome comes once the host holds its engine, or its
        error (a client waits for that status; the outcome alone comes before the engine)."""
        assert self.load_done.wait(LOAD_TIMEOUT)
        self.load_done.clear()
        with self._status_changed:
            outcome, statuses_at_end = self.outcomes[-1], self._statuses_at_load_end
            if not outcome.superseded:
                assert self._status_changed.wait_for(
                    lambda: len(self.statuses) > statuses_at_end, LOAD_TIMEOUT
                )
        return outcome


@pytest.fixture
def listener() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
def new_host(listener: RecordingListener) -> Iterator[Callable[[str], ModelHost]]:
    """Makes hosts, and stops their model threads after the test."""
    hosts: list[ModelHost] = []

    def make(model: str) -> ModelHost:
        hosts.append(ModelHost(listener, model))
        return hosts[-1]

    yield make
    for host in hosts:
        host.shutdown()


@pytest.fixture
def loaded_host(
    tiny_phi3_dir: Path, listener: RecordingListener, new_host: Callable[[str], ModelHost]
) -> ModelHost:
    """A host with the tiny Phi-3 loaded and its model thread idle: the job after the load,
    its 4-bit drafts, is done (a completion waits for it)."""
    host = new_host(str(tiny_phi3_dir))
    assert host.load(str(tiny_phi3_dir), threads=1)
    assert listener.wait_for_load() == LoadOutcome(model=str(tiny_phi3_dir))
    assert asyncio.run(host.generate(PROMPT_IDS, max_new_tokens=1, cache_key="warm-up"))
    return host


def test_a_load_reports_progress_and_ends_ready_with_weights(
    loaded_host: ModelHost, listener: RecordingListener, tiny_phi3_dir: Path
) -> None:
    assert listener.began == [str(tiny_phi3_dir)]
    assert listener.progress, "progress steps were reported"
    states = [status.state for status in listener.statuses]
    until_ready = states[: states.index("ready") + 1]  # then the fixture's completion
    assert until_ready[0] == "loading" and set(until_ready) == {"loading", "ready"}
    assert states[-1] == "ready"
    assert loaded_host.status.weights_loaded
    assert loaded_host.tokenizer is not None
    assert loaded_host.can_generate()


def test_loading_the_same_model_again_does_nothing(
    loaded_host: ModelHost, tiny_phi3_dir: Path
) -> None:
    assert not loaded_host.load(str(tiny_phi3_dir), threads=1)
    assert loaded_host.can_generate()


async def test_a_generation_updates_the_last_completion_figures(
    loaded_host: ModelHost, listener: RecordingListener
) -> None:
    seen = len(listener.statuses)
    generation = await loaded_host.generate(PROMPT_IDS, max_new_tokens=5, cache_key="doc")
    assert generation is not None
    assert 1 <= len(generation.token_ids) <= 5
    states = [status.state for status in listener.statuses[seen:]]
    assert states == ["generating", "ready"]
    assert loaded_host.status.last_tokens == len(generation.token_ids)
    assert loaded_host.status.last_latency_ms is not None


async def test_once_ready_an_fp32_model_takes_its_4bit_drafts_before_completing(
    loaded_host: ModelHost,
) -> None:
    engine = loaded_host.engine
    assert engine is not None
    if not engine.takes_int4_drafts:
        pytest.skip(NO_INT4_DRAFTS_HERE)
    # Loading them is the model thread's next job after the load: a completion comes after it.
    assert await loaded_host.generate(PROMPT_IDS, max_new_tokens=5, cache_key="doc") is not None
    assert engine.drafts_from_int4
    assert loaded_host.status.int4_drafts


async def test_int4_drafts_turned_off_and_on_go_and_come_back_with_the_model_kept(
    loaded_host: ModelHost, listener: RecordingListener, tiny_phi3_dir: Path
) -> None:
    engine = loaded_host.engine
    assert engine is not None
    if not engine.takes_int4_drafts:
        pytest.skip(NO_INT4_DRAFTS_HERE)
    statuses = len(listener.statuses)
    with_drafts = await loaded_host.generate(PROMPT_IDS, max_new_tokens=5, cache_key="doc")
    assert not loaded_host.load(str(tiny_phi3_dir), threads=1, int4_drafts=False)
    without = await loaded_host.generate(PROMPT_IDS, max_new_tokens=5, cache_key="doc")
    assert not engine.drafts_from_int4 and not loaded_host.status.int4_drafts
    assert not loaded_host.load(str(tiny_phi3_dir), threads=1, int4_drafts=True)
    again = await loaded_host.generate(PROMPT_IDS, max_new_tokens=5, cache_key="doc")
    assert engine.drafts_from_int4 and loaded_host.status.int4_drafts
    assert loaded_host.engine is engine  # never loaded again
    assert "loading" not in [status.state for status in listener.statuses[statuses:]]
    assert with_drafts and without and again
    assert with_drafts.token_ids == without.token_ids == again.token_ids


class _ReadyListener(RecordingListener):
    """Also wakes the test as soon as a status says the weights are ready."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = threading.Event()

    def status_changed(self, status: Status) -> None:
        super().status_changed(status)
        if status.state == "ready" and status.weights_loaded:
            self.ready.set()


def test_a_completion_asked_the_moment_the_status_says_ready_comes_after_the_drafts(
    tiny_phi3_dir: Path,
) -> None:
    listener = _ReadyListener()
    host = ModelHost(listener, str(tiny_phi3_dir))
    try:
        assert host.load(str(tiny_phi3_dir), threads=1)
        assert listener.ready.wait(LOAD_TIMEOUT)
        generation = asyncio.run(host.generate(PROMPT_IDS, max_new_tokens=2, cache_key="doc"))
        engine = host.engine
        assert generation is not None and engine is not None
        if not engine.takes_int4_drafts:
            pytest.skip(NO_INT4_DRAFTS_HERE)
        assert host.status.int4_drafts, "the completion ran before the drafts were loaded"
    finally:
        host.shutdown()


class HoldingTheWarmUp(RecordingListener):
    """Holds the first pass after the status says ready (the warm-up's) in its first layer,
    until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.host: ModelHost | None = None
        self.reached, self.release = threading.Event(), threading.Event()
        self.states_when_reached: list[str] = []

    def status_changed(self, status: Status) -> None:
        super().status_changed(status)
        engine = self.host.engine if self.host is not None else None
        if status.state == "ready" and engine is not None and not self.reached.is_set():
            decoder_layers(engine.model)[0].register_forward_hook(self._after_layer)

    def _after_layer(self, *_: object) -> None:
        if not self.reached.is_set():
            self.states_when_reached.extend(status.state for status in self.statuses)
            self.reached.set()
            self.release.wait(LOAD_TIMEOUT)


@pytest.fixture
def warm_up_held(
    tiny_phi3_dir: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[tuple[ModelHost, HoldingTheWarmUp]]:
    """A host with the tiny Phi-3 loaded, its warm-up held in its first layer; the engine's log
    (the warm-up's) is captured."""
    caplog.set_level(logging.INFO, logger=engine_module.__name__)
    listener = HoldingTheWarmUp()
    host = listener.host = ModelHost(listener, str(tiny_phi3_dir))
    try:
        assert host.load(str(tiny_phi3_dir), threads=1)
        assert listener.reached.wait(LOAD_TIMEOUT)
        yield host, listener
    finally:
        listener.release.set()
        host.shutdown()


async def test_ready_comes_before_the_warm_up_and_a_completion_then_stops_it_within_a_layer(
    warm_up_held: tuple[ModelHost, HoldingTheWarmUp], caplog: pytest.LogCaptureFixture
) -> None:
    host, listener = warm_up_held
    assert listener.states_when_reached[-1] == "ready"  # and the warm-up changes no status
    completion = asyncio.ensure_future(host.generate(PROMPT_IDS, max_new_tokens=2, cache_key="doc"))
    await asyncio.sleep(0)  # the completion has stopped the warm-up
    listener.release.set()
    generation = await completion
    assert generation is not None and len(generation.token_ids) == 2
    assert "The warm-up of" in caplog.text and "stopped early" in caplog.text


async def test_completions_turned_off_during_the_warm_up_warm_up_once_they_are_on_again(
    warm_up_held: tuple[ModelHost, HoldingTheWarmUp], caplog: pytest.LogCaptureFixture
) -> None:
    host, listener = warm_up_held
    host.use_completions(False)
    listener.release.set()
    await asyncio.to_thread(idle_model_thread, host)
    assert "stopped early" in caplog.text
    assert WARMED_UP not in caplog.text
    host.use_completions(True)
    await asyncio.to_thread(idle_model_thread, host)
    assert WARMED_UP in caplog.text  # what the first completion would have paid is paid


def test_a_load_holds_its_weights_compactly_once_ready_before_the_warm_up(
    tiny_phi3_dir: Path,
    listener: RecordingListener,
    new_host: Callable[[str], ModelHost],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps: list[tuple[str, str]] = []  # (step, the status then)
    warm_up = ModelEngine.warm_up

    def hold(engine: ModelEngine) -> None:
        steps.append(("hold", listener.statuses[-1].state))

    def warm(engine: ModelEngine, stop_event: threading.Event | None = None) -> None:
        steps.append(("warm-up", listener.statuses[-1].state))
        warm_up(engine, stop_event)

    monkeypatch.setattr(ModelEngine, "hold_weights_compactly", hold)
    monkeypatch.setattr(ModelEngine, "warm_up", warm)
    host = new_host(str(tiny_phi3_dir))
    assert host.load(str(tiny_phi3_dir), threads=1)
    assert listener.wait_for_load() == LoadOutcome(model=str(tiny_phi3_dir))
    idle_model_thread(host)
    assert steps == [("hold", "ready"), ("warm-up", "ready")]


WARMED_UP = "Decode passes choose among"
"""What the engine logs of a warm-up run to its end: the decode pass timed on each count."""


async def test_a_completion_does_not_wait_while_large_drafts_files_are_read(
    tiny_phi3_dir: Path,
    listener: RecordingListener,
    new_host: Callable[[str], ModelHost],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As Phi-3-mini's 4-bit layers: 2.3 GB, seconds to read from a cold disk.
    monkeypatch.setattr(drafts_keeper, "READ_AHEAD_FROM_BYTES", 0)
    folder = shutil.copytree(tiny_phi3_dir, tmp_path / "checkpoint")
    ModelEngine.load(resolve_model(str(folder)), weights="int4")  # caches its 4-bit layers
    disk_answers, read = threading.Event(), []

    def slow_read_ahead(files: list[Path], keep_going: Callable[[], bool]) -> bool:
        read.extend(files)
        assert disk_answers.wait(LOAD_TIMEOUT)
        return True

    monkeypatch.setattr(drafts_keeper, "read_ahead", slow_read_ahead)
    host = new_host(str(folder))
    engine = load_taking_drafts(host, listener, Path(folder))
    assert await host.generate(PROMPT_IDS, max_new_tokens=5, cache_key="doc") is not None
    assert read == [int4_cache.int4_entry(Path(folder)) / int4_cache.TENSORS_FILE]
    assert not engine.drafts_from_int4  # the completion ran while the disk was read
    disk_answers.set()
    wait_for_drafts(host)
    assert engine.drafts_from_int4


def load_taking_drafts(host: ModelHost, listener: RecordingListener, folder: Path) -> ModelEngine:
    """`folder` loaded in fp32 on `host`; the test is skipped where the CPU takes no 4-bit
    drafts."""
    host.load(str(folder), threads=1)
    assert listener.wait_for_load().error is None
    engine = host.engine
    assert engine is not None
    if not engine.takes_int4_drafts:
        pytest.skip(NO_INT4_DRAFTS_HERE)
    return engine


def wait_for_drafts(host: ModelHost) -> None:
    """Until the status says the model decodes with its 4-bit drafts (loaded after ready)."""
    deadline = time.monotonic() + LOAD_TIMEOUT
    while not host.status.int4_drafts:
        assert time.monotonic() < deadline, "the 4-bit drafts never loaded"
        time.sleep(0.02)


async def test_with_int4_drafts_off_an_fp32_model_decodes_without_them(
    tiny_phi3_dir: Path, listener: RecordingListener, new_host: Callable[[str], ModelHost]
) -> None:
    host = new_host(str(tiny_phi3_dir))
    assert host.load(str(tiny_phi3_dir), threads=1, int4_drafts=False)
    assert listener.wait_for_load().error is None
    assert await host.generate(PROMPT_IDS, max_new_tokens=5, cache_key="doc") is not None
    assert host.engine is not None and not host.engine.drafts_from_int4
    assert not host.status.int4_drafts


@pytest.fixture
def large_checkpoint(tiny_phi3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny Phi-3 in a folder of its own, taken for a model as large as Phi-3-mini:
    quantizing it on the model thread would hold up completions, so another process makes its
    4-bit layers (and keeps them where this one reads them: the session's cache, see
    conftest)."""
    monkeypatch.setattr(engine_module, "QUANTIZED_AT_ONCE_PARAMETERS", 0)
    return Path(shutil.copytree(tiny_phi3_dir, tmp_path / "checkpoint"))


def test_a_large_model_takes_its_4bit_drafts_once_another_process_made_its_layers(
    new_host: Callable[[str], ModelHost], listener: RecordingListener, large_checkpoint: Path
) -> None:
    folder = large_checkpoint
    host = new_host(str(folder))
    engine = load_taking_drafts(host, listener, folder)
    assert not host.status.int4_drafts
    wait_for_drafts(host)  # the other process has to start Python and import torch: seconds
    assert engine.drafts_from_int4
    assert paths.is_built(int4_cache.int4_entry(folder))


async def test_drafts_turned_off_while_they_load_are_dropped_and_the_status_says_so(
    loaded_host: ModelHost, tiny_phi3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = loaded_host.engine
    assert engine is not None
    if not engine.takes_int4_drafts:
        pytest.skip(NO_INT4_DRAFTS_HERE)
    assert not loaded_host.load(str(tiny_phi3_dir), threads=1, int4_drafts=False)
    assert await loaded_host.generate(PROMPT_IDS, max_new_tokens=1, cache_key="doc")
    loading, release = threading.Event(), threading.Event()
    load_drafter = engine.load_drafter

    def held_while_loading() -> bool:
        loaded = load_drafter()
        loading.set()
        assert release.wait(LOAD_TIMEOUT)
        return loaded

    monkeypatch.setattr(engine, "load_drafter", held_while_loading)
    assert not loaded_host.load(str(tiny_phi3_dir), threads=1, int4_drafts=True)
    assert await asyncio.to_thread(loading.wait, LOAD_TIMEOUT)
    assert not loaded_host.load(str(tiny_phi3_dir), threads=1, int4_drafts=False)
    release.set()
    assert await loaded_host.generate(PROMPT_IDS, max_new_tokens=2, cache_key="doc")
    assert not engine.drafts_from_int4
    assert not loaded_host.status.int4_drafts


class _RecordedInt4LayersProcess:
    """Stands in for the process that makes a model's 4-bit layers: records starts and stops."""

    started: ClassVar[list[_RecordedInt4LayersProcess]] = []

    def __init__(self, spec: str, on_end: Callable[[bool], None]) -> None:
        self.stopped = False
        self.started.append(self)

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def large_host(new_host: Callable[[str], ModelHost], large_checkpoint: Path) -> ModelHost:
    """A host on the large checkpoint, its model not loaded yet."""
    return new_host(str(large_checkpoint))


@pytest.fixture
def layer_processes(monkeypatch: pytest.MonkeyPatch) -> list[_RecordedInt4LayersProcess]:
    """The processes the host starts to make a model's 4-bit layers, recorded, not run."""
    monkeypatch.setattr(_RecordedInt4LayersProcess, "started", [])
    monkeypatch.setattr(drafts_keeper, "Int4LayersProcess", _RecordedInt4LayersProcess)
    return _RecordedInt4LayersProcess.started


async def test_drafts_toggled_while_the_model_is_busy_make_their_layers_in_one_process(
    large_host: ModelHost,
    listener: RecordingListener,
    large_checkpoint: Path,
    layer_processes: list[_RecordedInt4LayersProcess],
) -> None:
    # Making Phi-3-mini's 4-bit layers takes ~40 s and gigabytes: on, off and on again while a
    # completion runs must not leave two processes at it, one unstoppable.
    folder, host = large_checkpoint, large_host
    load_taking_drafts(host, listener, folder)
    assert await host.generate(PROMPT_IDS, max_new_tokens=1, cache_key="warm-up")
    assert len(layer_processes) == 1  # after ready, as always
    prompt = long_prompt(host, 2 * PREFILL_CHUNK_TOKENS + 176)
    async with older_request_held_in_its_second_chunk(host, prompt) as (completion, release):
        for on in (False, True, False, True):
            assert not host.load(str(folder), threads=1, int4_drafts=on)
        release.set()
        await completion
    assert await host.generate(PROMPT_IDS, max_new_tokens=1, cache_key="after")
    at_work = [made for made in layer_processes if not made.stopped]
    assert len(at_work) == 1
    host.shutdown()
    assert at_work[0].stopped


def test_a_large_model_has_its_4bit_layers_made_only_while_completions_are_on(
    large_host: ModelHost,
    listener: RecordingListener,
    large_checkpoint: Path,
    layer_processes: list[_RecordedInt4LayersProcess],
) -> None:
    # Making Phi-3-mini's 4-bit layers takes ~40 s of a core and gigabytes, for drafts that only
    # serve completions: a user who turned them off does not pay for it.
    folder, host = large_checkpoint, large_host
    host.use_completions(False)
    load_taking_drafts(host, listener, folder)
    # "ready" comes once the drafts' first step is queued, if any: then the model thread's jobs.
    listener.wait_for_status(lambda status: status.state == "ready")
    idle_model_thread(host)
    assert layer_processes == []
    host.use_completions(True)
    idle_model_thread(host)
    [making] = layer_processes
    assert not making.stopped
    host.use_completions(False)
    assert making.stopped


def idle_model_thread(host: ModelHost) -> None:
    """Until the model thread has done the jobs queued before now (a read of the weights runs
    after them)."""
    reading = host.read_weights()
    assert reading is not None
    assert reading.result(LOAD_TIMEOUT) is not None


async def test_the_caller_hears_the_end_before_the_status_says_ready(
    loaded_host: ModelHost, listener: RecordingListener
) -> None:
    ends: list[tuple[Generation | None, str]] = []

    def on_end(generation: Generation | None) -> None:
        ends.append((generation, listener.statuses[-1].state))

    generation = await loaded_host.generate(
        PROMPT_IDS, max_new_tokens=3, cache_key="doc", on_end=on_end
    )
    # A client that sees "ready" and asks again must find this generation ended.
    assert ends == [(generation, "generating")]
    assert listener.statuses[-1].state == "ready"


async def test_a_newer_request_supersedes_the_running_one(loaded_host: ModelHost) -> None:
    older = asyncio.ensure_future(
        loaded_host.generate(PROMPT_IDS, max_new_tokens=500, cache_key="a")
    )
    await asyncio.sleep(0)  # the older request is on the model thread now
    newer = await loaded_host.generate(PROMPT_IDS, max_new_tokens=3, cache_key="b")
    assert await older is None
    assert newer is not None and len(newer.token_ids) <= 3


async def test_a_cancelled_request_stops_and_the_next_one_runs(
    loaded_host: ModelHost, listener: RecordingListener
) -> None:
    task = asyncio.ensure_future(
        loaded_host.generate(PROMPT_IDS, max_new_tokens=500, cache_key="a")
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    generation = await loaded_host.generate(PROMPT_IDS, max_new_tokens=2, cache_key="a")
    assert generation is not None
    assert loaded_host.status.state == "ready"


def long_prompt(host: ModelHost, tokens: int) -> list[int]:
    """`tokens` tokens of this project's own source, repeated as needed."""
    assert host.tokenizer is not None
    source = Path(model_host_module.__file__).read_text(encoding="utf-8")
    ids = host.tokenizer.encode_prompt(source)
    return (ids * (tokens // len(ids) + 1))[:tokens]


@contextlib.asynccontextmanager
async def older_request_held_in_its_second_chunk(
    host: ModelHost, prompt: list[int], *, read_ahead: bool = False
) -> AsyncIterator[tuple[asyncio.Future[Any], threading.Event]]:
    """A request for `prompt` on "doc" (a completion, or with `read_ahead` a read), its model
    thread held after the first layer of the second prompt chunk's pass until the event
    yielded beside it is set (at the latest when the block ends)."""
    assert host.engine is not None
    first_layer = decoder_layers(host.engine.model)[0]
    reached, release = threading.Event(), threading.Event()
    calls = itertools.count(1)

    def after_layer(*_: object) -> None:
        if next(calls) == 2:
            reached.set()
            release.wait(LOAD_TIMEOUT)

    handle = first_layer.register_forward_hook(after_layer)
    try:
        older = asyncio.ensure_future(
            host.read_prompt(prompt, cache_key="doc")
            if read_ahead
            else host.generate(prompt, max_new_tokens=4, cache_key="doc")
        )
        assert await asyncio.to_thread(reached.wait, LOAD_TIMEOUT)
        yield older, release
    finally:
        release.set()
        handle.remove()


async def newer_request_then_release(
    host: ModelHost, prompt: list[int], cache_key: str, release: threading.Event
) -> Generation | None:
    """Ask for `prompt` on `cache_key` (which stops the held request), let the held one go on,
    and return the newer request's generation."""
    newer = asyncio.ensure_future(host.generate(prompt, max_new_tokens=2, cache_key=cache_key))
    await asyncio.sleep(0)  # the newer request has stopped the older one
    release.set()
    return await newer


@pytest.mark.parametrize("read_ahead", [False, True], ids=["completion", "read-ahead"])
async def test_a_newer_request_on_the_document_takes_over_the_prompt_chunk_in_flight(
    loaded_host: ModelHost, read_ahead: bool
) -> None:
    prompt = long_prompt(loaded_host, 2 * PREFILL_CHUNK_TOKENS + 176)
    typed_on = [*prompt[: 2 * PREFILL_CHUNK_TOKENS + 10], 450]
    async with older_request_held_in_its_second_chunk(
        loaded_host, prompt, read_ahead=read_ahead
    ) as (older, release):
        generation = await newer_request_then_release(loaded_host, typed_on, "doc", release)
        stopped = await older
    if read_ahead:  # a read says what it kept; a superseded completion answers nothing
        assert stopped is not None and stopped.cached_tokens == 2 * PREFILL_CHUNK_TOKENS
    else:
        assert stopped is None
    assert generation is not None
    assert generation.reused_prompt_tokens == 2 * PREFILL_CHUNK_TOKENS


async def test_a_cancelled_request_leaves_its_prompt_chunk_in_flight_to_the_next(
    loaded_host: ModelHost,
) -> None:
    prompt = long_prompt(loaded_host, 2 * PREFILL_CHUNK_TOKENS + 176)
    async with older_request_held_in_its_second_chunk(loaded_host, prompt) as (older, release):
        older.cancel()
        with pytest.raises(asyncio.CancelledError):
            await older
        release.set()
    generation = await loaded_host.generate(prompt, max_new_tokens=2, cache_key="doc")
    assert generation is not None
    assert generation.reused_prompt_tokens == 2 * PREFILL_CHUNK_TOKENS


async def test_a_request_on_another_document_stops_a_prompt_chunk_within_a_layer(
    loaded_host: ModelHost,
) -> None:
    prompt = long_prompt(loaded_host, 2 * PREFILL_CHUNK_TOKENS + 176)
    async with older_request_held_in_its_second_chunk(loaded_host, prompt) as (older, release):
        assert await newer_request_then_release(loaded_host, prompt, "other", release) is not None
        assert await older is None
    again = await loaded_host.generate(prompt, max_new_tokens=2, cache_key="doc")
    assert again is not None
    assert again.reused_prompt_tokens == PREFILL_CHUNK_TOKENS


async def test_after_a_cancel_a_request_on_another_document_stops_the_chunk_within_a_layer(
    loaded_host: ModelHost,
) -> None:
    prompt = long_prompt(loaded_host, 2 * PREFILL_CHUNK_TOKENS + 176)
    async with older_request_held_in_its_second_chunk(loaded_host, prompt) as (older, release):
        older.cancel()
        with pytest.raises(asyncio.CancelledError):
            await older
        assert await newer_request_then_release(loaded_host, prompt, "other", release) is not None
    again = await loaded_host.generate(prompt, max_new_tokens=2, cache_key="doc")
    assert again is not None
    assert again.reused_prompt_tokens == PREFILL_CHUNK_TOKENS


async def test_a_prompt_read_ahead_changes_no_status_and_leaves_little_to_the_completion(
    loaded_host: ModelHost, listener: RecordingListener
) -> None:
    prompt = long_prompt(loaded_host, PREFILL_CHUNK_TOKENS + 100)
    statuses = len(listener.statuses)
    read = await loaded_host.read_prompt(prompt, cache_key="doc")
    assert read is not None and read.cached_tokens == len(prompt) - 1
    assert len(listener.statuses) == statuses  # nothing generated: the status stays "ready"
    generation = await loaded_host.generate(prompt, max_new_tokens=2, cache_key="doc")
    assert generation is not None and generation.reused_prompt_tokens == len(prompt) - 1


async def test_a_read_ahead_never_stops_a_running_completion(loaded_host: ModelHost) -> None:
    running = asyncio.ensure_future(
        loaded_host.generate(PROMPT_IDS, max_new_tokens=200, cache_key="doc")
    )
    await asyncio.sleep(0)  # the completion is on the model thread now
    assert await loaded_host.read_prompt(long_prompt(loaded_host, 600), cache_key="other") is None
    generation = await running
    assert generation is not None and generation.finish_reason != "stopped"


async def test_a_request_that_reaches_the_host_after_completions_are_off_runs_nothing(
    loaded_host: ModelHost, listener: RecordingListener
) -> None:
    # One that passed the settings check just before they were turned off, then waited (on
    # the last suggestion, its prompt's tokens): its text or read would be for nobody.
    loaded_host.use_completions(False)
    statuses = len(listener.statuses)
    assert await loaded_host.generate(PROMPT_IDS, max_new_tokens=20, cache_key="doc") is None
    assert await loaded_host.read_prompt(long_prompt(loaded_host, 600), cache_key="doc") is None
    assert len(listener.statuses) == statuses  # nothing generated: the status stays "ready"
    loaded_host.use_completions(True)
    generation = await loaded_host.generate(PROMPT_IDS, max_new_tokens=2, cache_key="doc")
    assert generation is not None and generation.token_ids


async def test_the_weights_are_read_after_a_running_completion_never_beside_it(
    loaded_host: ModelHost,
) -> None:
    running = asyncio.ensure_future(
        loaded_host.generate(PROMPT_IDS, max_new_tokens=200, cache_key="doc")
    )
    await asyncio.sleep(0)  # the completion is on the model thread now
    reading = loaded_host.read_weights()
    assert reading is not None
    reads = await asyncio.wrap_future(reading)
    assert reads is not None and reads.bytes_read > 0
    assert running.done(), "the read waited for the completion"
    generation = running.result()
    assert generation is not None and generation.finish_reason != "stopped"


def test_no_weights_are_read_without_a_model(
    new_host: Callable[[str], ModelHost], tiny_phi3_dir: Path
) -> None:
    assert new_host(str(tiny_phi3_dir)).read_weights() is None


async def test_a_newer_read_ahead_elsewhere_stops_the_older_within_a_layer(
    loaded_host: ModelHost,
) -> None:
    prompt = long_prompt(loaded_host, 2 * PREFILL_CHUNK_TOKENS + 176)
    async with older_request_held_in_its_second_chunk(loaded_host, prompt, read_ahead=True) as (
        older,
        release,
    ):
        newer = asyncio.ensure_future(loaded_host.read_prompt(PROMPT_IDS, cache_key="other"))
        await asyncio.sleep(0)
        release.set()
        assert await newer is not None
        stopped_read = await older
    assert stopped_read is not None and stopped_read.cached_tokens == PREFILL_CHUNK_TOKENS


async def stop_what_the_newer_request_is_for(
    host: ModelHost, how: str, model: str
) -> asyncio.Future[Generation | None] | None:
    """Do what stops a completion on "doc" within a layer (see the test below); returns a
    request it makes, if any, once that request has stopped it."""
    if how == "another document":
        elsewhere = asyncio.ensure_future(
            host.generate(PROMPT_IDS, max_new_tokens=2, cache_key="b")
        )
        # Its first step stops the running requests, before its first await: without it, the
        # held model thread, released, could finish the chunk before the request stopped it.
        await asyncio.sleep(0)
        return elsewhere
    if how == "closing the document":
        host.forget_document("doc")
    elif how == "a reload":
        assert host.load(model, threads=1, trust_remote_code=True)  # the same model, reloaded
    elif how == "the exit":
        host.shutdown(timeout=0)
    else:
        host.supersede()
    return None


@pytest.mark.parametrize(
    "how",
    ["another document", "closing the document", "a reload", "the exit", "a request with no text"],
)
async def test_what_stops_a_newer_request_stops_the_prompt_chunk_kept_for_it_within_a_layer(
    loaded_host: ModelHost, tiny_phi3_dir: Path, how: str
) -> None:
    prompt = long_prompt(loaded_host, 2 * PREFILL_CHUNK_TOKENS + 176)
    typed_on = [*prompt[: 2 * PREFILL_CHUNK_TOKENS + 10], 450]
    # A read ahead says how far it got; a completion's stop is the same `StopRequest`.
    async with older_request_held_in_its_second_chunk(loaded_host, prompt, read_ahead=True) as (
        older,
        release,
    ):
        # A keystroke: the newer request begins with the chunk in flight, which finishes for it.
        newer = asyncio.ensure_future(
            loaded_host.generate(typed_on, max_new_tokens=2, cache_key="doc")
        )
        await asyncio.sleep(0)
        # Then what stops the newer request: nothing needs the older one's chunk any more.
        elsewhere = await stop_what_the_newer_request_is_for(loaded_host, how, str(tiny_phi3_dir))
        release.set()
        stopped_read = await older
        assert await newer is None
        if elsewhere is not None:
            assert await elsewhere is not None
    assert stopped_read is not None and stopped_read.cached_tokens == PREFILL_CHUNK_TOKENS


@pytest.mark.parametrize("keeps_the_chunk", [True, False], ids=["typed-on", "edited-before"])
async def test_the_next_keystroke_decides_for_a_chunk_kept_for_the_one_before(
    loaded_host: ModelHost, keeps_the_chunk: bool
) -> None:
    prompt = long_prompt(loaded_host, 2 * PREFILL_CHUNK_TOKENS + 176)
    typed_on = [*prompt[: 2 * PREFILL_CHUNK_TOKENS + 10], 450]
    # The third request types on, or follows an edit inside the chunk in flight.
    end = 2 * PREFILL_CHUNK_TOKENS + 11 if keeps_the_chunk else PREFILL_CHUNK_TOKENS + 100
    third = [*typed_on[:end], 29871]
    async with older_request_held_in_its_second_chunk(loaded_host, prompt, read_ahead=True) as (
        older,
        release,
    ):
        second = asyncio.ensure_future(
            loaded_host.generate(typed_on, max_new_tokens=2, cache_key="doc")
        )
        await asyncio.sleep(0)
        second.cancel()  # as an editor does when the user types on
        await asyncio.sleep(0)
        newest = await newer_request_then_release(loaded_host, third, "doc", release)
        stopped_read = await older
    kept = 2 * PREFILL_CHUNK_TOKENS if keeps_the_chunk else PREFILL_CHUNK_TOKENS
    assert stopped_read is not None and stopped_read.cached_tokens == kept
    assert newest is not None and newest.reused_prompt_tokens == min(kept, end)


async def test_a_thread_count_change_stops_a_read_ahead_whose_prompt_it_would_drop(
    loaded_host: ModelHost, tiny_phi3_dir: Path
) -> None:
    # fp32: a prompt read on 1 thread is dropped on the move to 2 (its bits differ there).
    assert loaded_host.engine is not None and loaded_host.engine.prompt_bits_depend_on_threads
    prompt = long_prompt(loaded_host, 2 * PREFILL_CHUNK_TOKENS + 176)
    async with older_request_held_in_its_second_chunk(loaded_host, prompt, read_ahead=True) as (
        read,
        release,
    ):
        assert not loaded_host.load(str(tiny_phi3_dir), threads=2)
        release.set()
        stopped_read = await read
    assert stopped_read is not None and stopped_read.cached_tokens == PREFILL_CHUNK_TOKENS


async def test_a_prompt_read_for_long_is_reported_until_it_is_read(
    loaded_host: ModelHost, listener: RecordingListener
) -> None:
    await loaded_host.generate(PROMPT_IDS, max_new_tokens=2, cache_key="quick")
    assert listener.readings == []  # a prompt read at once shows no progress
    prompt = long_prompt(loaded_host, 2 * PREFILL_CHUNK_TOKENS + 176)
    assert loaded_host.engine is not None
    layers = decoder_layers(loaded_host.engine.model)
    # The tiny model reads at once: each layer of its 3 passes is made to take longer.
    pause = SHOWN_AFTER_SECONDS / 3
    handles = [layer.register_forward_hook(lambda *_: time.sleep(pause)) for layer in layers]
    try:
        await loaded_host.generate(prompt, max_new_tokens=1, cache_key="long")
    finally:
        for handle in handles:
            handle.remove()
    assert listener.readings, "no report in the ~2 s the prompt took"
    assert {reading.total for reading in listener.readings} == {len(prompt)}
    assert listener.readings[-1] == PromptReading(len(prompt), len(prompt), ended=True)
    assert [reading.ended for reading in listener.readings].count(True) == 1


def test_a_model_that_cannot_load_is_an_error_that_names_the_fix(
    listener: RecordingListener, new_host: Callable[[str], ModelHost], tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing-model")
    host = new_host(missing)
    host.load(missing)
    outcome = listener.wait_for_load()
    assert outcome.error is not None and "phi3.model" in outcome.error
    assert host.status.state == "error"
    assert host.status.message == outcome.error
    assert host.tokenizer is None and not host.can_generate()


async def test_no_generation_without_a_model(
    new_host: Callable[[str], ModelHost], tmp_path: Path
) -> None:
    host = new_host(str(tmp_path))
    assert await host.generate(PROMPT_IDS, max_new_tokens=2, cache_key="doc") is None


def test_a_reload_drops_the_old_model_at_once(
    loaded_host: ModelHost, listener: RecordingListener, tmp_path: Path
) -> None:
    seen = len(listener.statuses)
    loaded_host.load(str(tmp_path / "another-missing-model"))
    # Until the new model loads, nothing answers from the old one.
    assert loaded_host.tokenizer is None
    assert not loaded_host.can_generate()
    assert loaded_host.status.state == "loading"
    outcome = listener.wait_for_load()
    assert outcome.error is not None
    assert listener.statuses[-1].state == "error"
    # Its memory goes first, and the status says so rather than "Queued".
    messages = [status.message for status in listener.statuses[seen:]]
    assert messages[:2] == ["Queued", "Freeing the previous model"]


async def test_a_thread_count_change_loads_nothing_and_takes_effect_for_the_next_completion(
    loaded_host: ModelHost, listener: RecordingListener, tiny_phi3_dir: Path
) -> None:
    statuses = len(listener.statuses)
    assert not loaded_host.load(str(tiny_phi3_dir), threads=2)
    assert loaded_host.can_generate()
    assert await loaded_host.generate(PROMPT_IDS, max_new_tokens=2, cache_key="doc")
    assert listener.began == [str(tiny_phi3_dir)]
    assert "loading" not in [status.state for status in listener.statuses[statuses:]]
    assert loaded_host.engine is not None
    assert max(loaded_host.engine.pass_planner.thread_counts) == 2


@pytest.mark.parametrize(
    "change",
    ["completions on", "another model", "another thread count"],
)
def test_settings_changed_after_the_shutdown_are_ignored(
    tiny_phi3_dir: Path,
    listener: RecordingListener,
    new_host: Callable[[str], ModelHost],
    tmp_path: Path,
    change: str,
) -> None:
    host = new_host(str(tiny_phi3_dir))
    host.use_completions(False)  # loaded while they are off: turned on, it would warm up
    assert host.load(str(tiny_phi3_dir), threads=1)
    assert listener.wait_for_load() == LoadOutcome(model=str(tiny_phi3_dir))
    assert host.shutdown()
    seen = len(listener.statuses)
    # A settings change that reaches the host after the server's shutdown.
    if change == "completions on":
        host.use_completions(True)
    elif change == "another model":
        assert not host.load(str(tmp_path / "another-model"), threads=1)
    else:
        assert not host.load(str(tiny_phi3_dir), threads=2)
    assert listener.statuses[seen:] == []  # nothing said "loading" to a client gone
    assert listener.began == [str(tiny_phi3_dir)]


def test_a_reload_of_the_same_model_keeps_serving_hovers(
    loaded_host: ModelHost, listener: RecordingListener, tiny_phi3_dir: Path
) -> None:
    # Only how it runs changes.
    assert loaded_host.load(str(tiny_phi3_dir), threads=1, trust_remote_code=True)
    # Hovers answer while the model reloads (the load may already have read its tokenizer anew).
    assert loaded_host.tokenizer is not None
    assert not loaded_host.can_generate()
    assert listener.wait_for_load().error is None
    assert loaded_host.tokenizer is not None and loaded_host.can_generate()


class _SupersedingListener(RecordingListener):
    """Asks its host for `other` once a load starts its imports, beside its tokenizer's read."""

    def __init__(self, other: str) -> None:
        super().__init__()
        self.other = other
        self.host: ModelHost | None = None

    def load_progressed(self, update: ProgressUpdate) -> None:
        super().load_progressed(update)
        if self.host is not None and update.message.startswith("Starting torch"):
            host, self.host = self.host, None
            host.load(self.other, threads=1)


def test_the_tokenizer_of_a_superseded_load_never_serves_hovers(
    tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    listener = _SupersedingListener(other=str(tmp_path / "missing-model"))
    host = ModelHost(listener, str(tiny_phi3_dir))
    listener.host = host
    try:
        host.load(str(tiny_phi3_dir), threads=1)
        while len(listener.outcomes) < 2:
            assert listener.wait_for_load() is not None
    finally:
        host.shutdown()
    assert listener.outcomes[0].superseded
    assert listener.outcomes[1].error is not None
    # Hovers would show the first model's tokens while the user asked for another model.
    assert host.tokenizer is None


def test_the_exit_leaves_at_once_a_download_that_has_not_seen_its_stop(
    holding_hub: LocalHub,
    listener: RecordingListener,
    tiny_phi3_dir: Path,
) -> None:
    host = ModelHost(listener, HUB_REPO)
    host.load(HUB_REPO, threads=1)
    downloading = f"Downloading the weights of {HUB_REPO}"
    # Its first 10 MiB have come: the download waits for the held end of the file.
    listener.wait_for_status(lambda status: status.message == downloading)
    host.load(str(tiny_phi3_dir), threads=1)  # the user gives up waiting
    listener.wait_for_status(lambda status: status.state == "ready")
    assert listener.outcomes[0].superseded
    # The download still waits for the hub's next bytes, which never come while the test runs:
    # the interpreter's exit would wait for it (its workers are not daemons), so the server must
    # leave without it. False: it returned with the download still running (a shutdown that
    # waited for it would hang, or return True once the download's read timed out).
    assert host.shutdown() is False


def test_the_exit_stops_a_download_from_xet_storage(
    xet_hub: LocalHub, listener: RecordingListener, tmp_path: Path
) -> None:
    # VS Code closed while the weights download from the hub's Xet storage: hf_xet's threads
    # would download on to the end while the process exits, and leave their partial file.
    host = ModelHost(listener, LARGE_REPO)
    host.load(LARGE_REPO, threads=1)
    listener.wait_for_status(lambda status: 0 < (status.percentage or 0) < 100)
    host.shutdown()
    for thread in threading.enumerate():
        if thread.name == "phi3-download":
            thread.join(LOAD_TIMEOUT)  # a download that runs on ends here
    assert [path.name for path in (tmp_path / "hub").rglob("*.incomplete")] == []
    assert [path.name for path in (tmp_path / "hub").rglob("*.safetensors")] == []


def test_the_same_model_asked_in_another_format_during_its_download_keeps_the_download(
    holding_hub: LocalHub, listener: RecordingListener, new_host: Callable[[str], ModelHost]
) -> None:
    # huggingface_hub does not resume a stopped download: picking int4 at 80 % of Phi-3-mini's
    # 7.6 GB would fetch them all again.
    host = new_host(HUB_REPO)
    host.load(HUB_REPO, threads=1)
    assert holding_hub.weights_asked.wait(LOAD_TIMEOUT)
    host.load(HUB_REPO, threads=1, weights="int4")
    holding_hub.weights_released.set()
    listener.wait_for_status(lambda status: status.state in ("ready", "error"))
    assert listener.statuses[-1].state == "ready"
    assert listener.statuses[-1].weights == "int4"
    assert len(holding_hub.sent_matching("*.safetensors")) == 1


def test_another_model_after_a_format_change_does_not_wait_for_the_kept_download(
    holding_hub: LocalHub,
    listener: RecordingListener,
    new_host: Callable[[str], ModelHost],
    tiny_phi3_dir: Path,
) -> None:
    # int4 picked during the download keeps it; then the user gives up waiting.
    host = new_host(HUB_REPO)
    host.load(HUB_REPO, threads=1)
    assert holding_hub.weights_asked.wait(LOAD_TIMEOUT)
    host.load(HUB_REPO, threads=1, weights="int4")
    host.load(str(tiny_phi3_dir), threads=1)
    listener.wait_for_status(
        lambda status: status.model == str(tiny_phi3_dir) and status.state in ("ready", "error")
    )
    assert listener.statuses[-1].state == "ready"
    assert not holding_hub.weights_released.is_set(), "loaded while the download was held"


def test_another_model_after_a_format_change_stops_the_kept_gguf_conversion(
    smollm2_dir: Path,
    listener: RecordingListener,
    new_host: Callable[[str], ModelHost],
    tiny_phi3_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Phi-3-mini GGUF converts for minutes: int4 picked meanwhile keeps the conversion, then
    # the user gives up waiting.
    cache = tmp_path / "cache"
    monkeypatch.setenv(paths.CACHE_ENV, str(cache))
    gguf = str(shutil.copy2(smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path))
    host = new_host(gguf)
    host.load(gguf, threads=1)
    listener.wait_for_status(lambda status: (status.percentage or 0) > 0)
    host.load(gguf, threads=1, weights="int4")
    host.load(str(tiny_phi3_dir), threads=1)
    listener.wait_for_status(
        lambda status: status.model == str(tiny_phi3_dir) and status.state in ("ready", "error")
    )
    assert listener.statuses[-1].state == "ready"
    assert not [entry for entry in (cache / "gguf").iterdir() if paths.is_built(entry)]


@pytest.mark.parametrize("chosen", ["another model", "fp32 weights"])
def test_a_load_chosen_while_another_waits_for_another_processs_4bit_layers_loads_at_once(
    listener: RecordingListener,
    new_host: Callable[[str], ModelHost],
    tiny_phi3_dir: Path,
    tmp_path: Path,
    chosen: str,
) -> None:
    # Two editor windows on Phi-3-mini in int4: the second waits while the first makes the
    # 4-bit layers (35-50 s). Another model, or the same in fp32, chosen meanwhile waited too.
    checkpoint = str(shutil.copytree(tiny_phi3_dir, tmp_path / "tiny-phi3"))
    entry = int4_cache.int4_entry(Path(checkpoint))
    entry.parent.mkdir(parents=True, exist_ok=True)
    host = new_host(checkpoint)
    model = str(tiny_phi3_dir) if chosen == "another model" else checkpoint
    with FileLock(str(entry.parent / f".{entry.name}.lock")):  # the other process's build
        host.load(checkpoint, threads=1, weights="int4")
        listener.wait_for_status(
            lambda status: (status.message or "").endswith(
                "Waiting for another phi3-lsp process to make its 4-bit layers"
            )
        )
        host.load(model, threads=1, weights="fp32")
        listener.wait_for_status(
            lambda status: (
                status.model == model
                and status.weights == "fp32"
                and status.state in ("ready", "error")
            )
        )
        assert listener.statuses[-1].state == "ready"
    assert not paths.is_built(entry)


def test_the_collector_runs_while_the_weights_download(
    holding_hub: LocalHub, new_host: Callable[[str], ModelHost]
) -> None:
    # A download lasts minutes (Phi-3-mini: 7.6 GB), and hovers are answered meanwhile: their
    # garbage must not pile up as it does, uncollected, for the seconds of a load.
    host = new_host(HUB_REPO)
    host.load(HUB_REPO, threads=1)
    assert holding_hub.weights_asked.wait(LOAD_TIMEOUT)
    assert gc.isenabled()


def test_a_superseded_download_that_reads_on_stops_and_leaves_nothing_in_the_cache(
    holding_hub: LocalHub,
    listener: RecordingListener,
    tiny_phi3_dir: Path,
    tmp_path: Path,
) -> None:
    host = ModelHost(listener, HUB_REPO)
    host.load(HUB_REPO, threads=1)
    assert holding_hub.weights_asked.wait(LOAD_TIMEOUT)
    host.load(str(tiny_phi3_dir), threads=1)
    listener.wait_for_status(lambda status: status.state == "ready")
    holding_hub.weights_released.set()  # the download reads on, and sees its stop
    assert host.shutdown() is True
    # Neither whole weights nor a part of them, which nothing would ever read or delete.
    assert [path.name for path in (tmp_path / "hub").rglob("*.incomplete")] == []
    assert [path.name for path in (tmp_path / "hub").rglob("*.safetensors")] == []


def test_a_failed_load_is_tried_again_only_when_a_setting_of_the_load_changes(
    listener: RecordingListener,
    new_host: Callable[[str], ModelHost],
    tmp_path: Path,
    tiny_phi3_dir: Path,
) -> None:
    folder = tmp_path / "model-copied-later"
    host = new_host(str(folder))
    host.load(str(folder), threads=1)
    assert listener.wait_for_load().error is not None
    # The same request again (the user changed some other setting): the same error would
    # come again, with its message.
    assert not host.load(str(folder), threads=1)
    assert host.status.state == "error"
    shutil.copytree(tiny_phi3_dir, folder)  # the user fixes the cause
    assert host.load(str(folder), threads=1, trust_remote_code=True)
    assert listener.wait_for_load().error is None
    assert host.can_generate()


def test_a_loaded_model_is_kept_out_of_garbage_collection_and_freed_on_reload(
    loaded_host: ModelHost, listener: RecordingListener, tiny_phi3_dir: Path
) -> None:
    import weakref

    assert loaded_host.engine is not None
    old_modules = [weakref.ref(module) for module in loaded_host.engine.model.modules()]
    # Full collections would walk every object of torch, transformers and the model.
    assert gc.get_freeze_count() > 0
    assert loaded_host.load(str(tiny_phi3_dir), threads=1, weights="int4")
    assert listener.wait_for_load().error is None
    # With none: frozen, the previous model's memory goes only as its last reference does.
    assert [ref for ref in old_modules if ref() is not None] == []
    assert loaded_host.can_generate()


async def test_a_reload_during_a_completion_frees_the_previous_model_on_the_model_thread(
    loaded_host: ModelHost, listener: RecordingListener, tiny_phi3_dir: Path
) -> None:
    # Freeing a model's memory holds the GIL (Phi-3-mini: ~0.5 s). On the model thread it
    # happens as the status says "Freeing the previous model"; from the request that awaited
    # the completion, it would come later, in the middle of answering the editor.
    import weakref

    assert loaded_host.engine is not None
    freed_on: list[str] = []
    weakref.finalize(
        loaded_host.engine.model, lambda: freed_on.append(threading.current_thread().name)
    )
    completion = asyncio.ensure_future(
        loaded_host.generate(PROMPT_IDS * 20, max_new_tokens=200, cache_key="doc")
    )
    await asyncio.sleep(0.05)  # on the model thread now
    assert loaded_host.load(str(tiny_phi3_dir), threads=1, weights="int4")
    assert await completion is None  # stopped by the reload
    assert (await asyncio.to_thread(listener.wait_for_load)).error is None
    assert freed_on == ["phi3-model"]


def test_the_collector_rests_while_a_model_loads_and_runs_after_any_load(
    new_host: Callable[[str], ModelHost],
    listener: RecordingListener,
    tiny_phi3_dir: Path,
    tmp_path: Path,
) -> None:
    host = new_host(str(tiny_phi3_dir))
    host.load(str(tiny_phi3_dir), threads=1)
    assert listener.wait_for_load().error is None
    # Its full passes would walk every object imported and loaded so far, again and again.
    assert listener.collector_on_while_loading
    assert not any(listener.collector_on_while_loading)
    assert gc.isenabled()
    host.load(str(tmp_path / "no-such-model"), threads=1)
    assert listener.wait_for_load().error is not None
    assert gc.isenabled()


HOVERS_BEFORE_TORCH = """
import sys, threading, time
from phi3_lsp.model_host import ModelHost

class Listener:
    def __init__(self):
        self.done = threading.Event()
    def status_changed(self, status): pass
    def load_began(self, model): pass
    def load_progressed(self, update): pass
    def load_ended(self, outcome):
        self.outcome = outcome
        self.done.set()

def engine_imported():
    # The engine module defines its class once torch and transformers are imported.
    return hasattr(sys.modules.get("phi3_lsp.engine"), "ModelEngine")

listener = Listener()
host = ModelHost(listener, sys.argv[1])
host.load(sys.argv[1], threads=1)
while host.tokenizer is None and not listener.done.is_set():
    time.sleep(0.001)
tokenizer_first = host.tokenizer is not None and not engine_imported()
assert listener.done.wait(120)
host.shutdown()
print(listener.outcome.error, tokenizer_first)
"""


def test_hovers_work_before_torch_and_transformers_are_imported(tiny_phi3_dir: Path) -> None:
    # Importing torch and transformers takes seconds; the tokenizer needs neither.
    result = subprocess.run(
        [sys.executable, "-c", HOVERS_BEFORE_TORCH, str(tiny_phi3_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=LOAD_TIMEOUT,
    )
    assert result.stdout.split() == ["None", "True"], result.stderr


def test_the_model_thread_turns_to_its_idle_work_once_no_job_waits() -> None:
    ran: list[str] = []
    idle_after: list[list[str]] = []
    gate = threading.Event()
    model_thread = ModelThread(when_idle=lambda: idle_after.append(list(ran)))

    def run(name: str) -> None:
        gate.wait(10)
        ran.append(name)

    try:
        jobs = [model_thread.submit(run, name) for name in ("first", "second", "third")]
        gate.set()  # the first job held the others in the queue until now
        for job in jobs:
            job.result(timeout=10)
    finally:
        model_thread.shutdown()
    assert idle_after == [["first", "second", "third"]]


def test_the_idle_work_waits_until_no_job_has_come_for_a_while() -> None:
    # Giving memory back holds the heap's lock for up to ~0.1 s: not when a keystroke's request
    # is likely, right after a completion.
    # Waits of half the idle time each: a busy machine may stall this thread for up to ~1.75 s
    # at either step without the idle work seeming early.
    idle = threading.Event()
    model_thread = ModelThread(when_idle=idle.set, idle_after=4.0)
    try:
        model_thread.submit(time.sleep, 0).result(timeout=10)
        assert not idle.wait(2.25)
        model_thread.submit(time.sleep, 0).result(timeout=10)
        assert not idle.wait(2.25), "4.5 s after the first job, 2.25 s after the second"
        assert idle.wait(10)
    finally:
        model_thread.shutdown()
