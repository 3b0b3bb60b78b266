"""The measurements taken on the real server: startup, completions, typing, edits, hovers, RSS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types

from bench.lsp_session import Completion, ServerSession, end_position, utf16_length
from bench.memory_floor import MemoryFloor
from bench.workload import PromptWork

TINY_DOCUMENT = "answer = 42\n"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
READY_TIMEOUT_SECONDS = 1800.0
EDITS_BEFORE_HOVER = 100
"""Edits each followed by a hover: enough for a p99 that is not simply the largest sample."""
LONG_EDIT_LINES = 400
"""Lines of the long document above the cursor for edits past the prompt budget."""
LONG_EDIT_CONTEXT_TOKENS = 512
"""A budget these lines exceed several times, small enough for a Phi-3-sized cold prompt."""
MOVED_AFTER_SECONDS = 1.0
"""When the user moves the cursor while the longest prompt is read: within its first chunk."""
TYPED_WHILE_READING = "result"
"""Typed at the end of the longest prompt while it is read, one character a keystroke."""
KEYSTROKE_SECONDS = 0.5
"""Between two keystrokes: each cancels the last request and asks again, as an editor does."""


@dataclass
class PromptFigures:
    """Everything measured on one prompt size, in window order."""

    label: str
    warmup: Completion | None = None
    first_token: list[Completion] = field(default_factory=list)
    first_answer: list[Completion] = field(default_factory=list)
    full: list[Completion] = field(default_factory=list)
    typing_through: list[Completion] = field(default_factory=list)
    typing_through_expected: list[bool] = field(default_factory=list)
    edits: list[Completion] = field(default_factory=list)
    full_with_core_taken: list[Completion] = field(default_factory=list)
    """The `full` windows again (cold), while another process keeps one core busy."""
    moved_while_reading: list[Completion] = field(default_factory=list)
    """Full answers a third of the way into each `full` window, asked `MOVED_AFTER_SECONDS`
    into a cancelled request at the window's end."""
    moved_on_idle: list[Completion] = field(default_factory=list)
    """The same answers asked of a server with nothing else to do (cold)."""
    typed_while_reading: list[Completion] = field(default_factory=list)
    """Full answers after the last keystroke of `TYPED_WHILE_READING`, typed at the end of each
    `full` window from the moment its completion was asked."""
    typed_on_idle: list[Completion] = field(default_factory=list)
    """The same answers asked of a server with nothing else to do (cold)."""
    read_at_cursor: list[Completion] = field(default_factory=list)
    """The `full` windows' answers (in new documents), asked once `phi3/readAtCursor` at the
    end had read the text before it: the cursor rested there first."""
    read_at_cursor_seconds: list[float] = field(default_factory=list)
    """How long each of those reads took, until the server answered."""
    memory_floors: list[MemoryFloor] = field(default_factory=list)
    """A fresh buffer's floor, measured just before and just after the `full` windows; the
    report sets it beside the floor of `weight_read_speeds`, which judges, and takes the pass
    bytes of both from it."""
    weight_read_speeds: list[float] = field(default_factory=list)
    """Bytes per second at which the server read its own weights (`phi3.measureWeightReads`)
    right after each `full` answer: the memory those answers' passes read, at the speed it
    had then (on this host the same weights read at ~35 GB/s and ~60 GB/s minutes apart)."""


@dataclass
class ServerFigures:
    initialize_seconds: list[float] = field(default_factory=list)
    ready_seconds: list[float] = field(default_factory=list)
    first_hover_seconds: list[float] = field(default_factory=list)
    first_ready_seconds: float | None = None  # int4: the start that makes the cached 4-bit layers
    transport_seconds: list[float] = field(default_factory=list)
    prompts: list[PromptFigures] = field(default_factory=list)
    hover_idle_seconds: list[float] = field(default_factory=list)
    hover_busy_seconds: list[float] = field(default_factory=list)
    hover_after_edit_seconds: list[float] = field(default_factory=list)
    long_document_edits: list[Completion] = field(default_factory=list)
    """Answers after 1-character edits at the end of a text longer than the prompt budget."""
    cancel_seconds: list[float] = field(default_factory=list)
    busy_completions: int = 0
    peak_rss_kib: int | None = None
    ready_rss_kib: int | None = None
    closed_rss_kib: int | None = None
    """Resident at the end of the run, every document closed."""


@dataclass(frozen=True)
class ServerPlan:
    """What to run against one model."""

    model: str
    startups: int
    prompts: list[PromptWork]
    max_new_tokens: int
    context_tokens: int
    long_document: str
    hovers: int
    log_dir: Path
    weights: str = "fp32"
    int4_drafts: bool = True
    """fp32's 4-bit drafts (`phi3.int4Drafts`)."""
    measure_floor: Callable[[], MemoryFloor | None] | None = None
    """Measures a fresh buffer's memory floor now, while the server idles (in a process of its
    own); when set, the server's own weights are read after each full answer too."""


def server_command(model: str, log_file: Path) -> list[str]:
    return [sys.executable, "-m", "phi3_lsp", "--model", model, "--log-file", str(log_file)]


def word_positions(text: str, count: int, seed: int) -> list[types.Position]:
    """`count` positions inside identifiers of `text`, drawn at random lines (reproducibly)."""
    lines = text.split("\n")
    chooser = random.Random(seed)
    positions: list[types.Position] = []
    while len(positions) < count:
        line_number = chooser.randrange(len(lines))
        words = list(IDENTIFIER.finditer(lines[line_number]))
        if not words:
            continue
        word = chooser.choice(words)
        middle = (word.start() + word.end()) // 2
        character = utf16_length(lines[line_number][:middle])
        positions.append(types.Position(line=line_number, character=character))
    return positions


def diverging_character(suggestion: str) -> str:
    """A character a user could type that is not the next one of the suggestion."""
    return "x" if not suggestion.startswith("x") else "_"


async def run_server(plan: ServerPlan, progress: Callable[[str], None]) -> ServerFigures:
    """Start the server `plan.startups` times (timing each), then measure on the last one."""
    figures = ServerFigures()
    settings: dict[str, Any] = {
        "model": plan.model,
        "maxNewTokens": plan.max_new_tokens,
        "contextTokens": plan.context_tokens,
        "weights": plan.weights,
        "int4Drafts": plan.int4_drafts,
        # 0: every answer is the whole continuation (the early answer is timed on its own).
        "answerBudgetMs": 0,
    }
    session: ServerSession | None = None
    if plan.weights == "int4":
        # The 4-bit layers are made on a checkpoint's first int4 load and cached: this start
        # makes them (from an empty entry), the timed ones read them, as a user's later do.
        forget_int4_layers(plan.model)
        log = plan.log_dir / "server-first.log"
        session = await ServerSession.start(
            server_command(plan.model, log), {"phi3": settings}, plan.log_dir / "server.stderr"
        )
        figures.first_ready_seconds = await session.wait_ready(READY_TIMEOUT_SECONDS)
        progress(f"  first int4 start: ready {figures.first_ready_seconds:.2f} s")
        await session.shutdown()
        # The layers just written (2.3 GB for Phi-3-mini) would otherwise go to disk during
        # the timed starts, as they never do before a user's later start.
        os.sync()
    for attempt in range(plan.startups):
        log = plan.log_dir / f"server-{attempt}.log"
        session = await ServerSession.start(
            server_command(plan.model, log), {"phi3": settings}, plan.log_dir / "server.stderr"
        )
        figures.initialize_seconds.append(session.initialize_seconds)
        # As a user hovering while the model loads: hovers need only the tokenizer.
        first_hover = asyncio.ensure_future(session.seconds_to_first_hover())
        try:
            figures.ready_seconds.append(await session.wait_ready(READY_TIMEOUT_SECONDS))
            figures.ready_rss_kib = session.rss_kib()
            figures.first_hover_seconds.append(await first_hover)
        finally:
            first_hover.cancel()
        progress(
            f"  start {attempt + 1}/{plan.startups}: initialize "
            f"{session.initialize_seconds * 1000:.0f} ms, first hover "
            f"{figures.first_hover_seconds[-1]:.2f} s, ready {figures.ready_seconds[-1]:.2f} s"
        )
        if attempt < plan.startups - 1:
            await session.shutdown()
    assert session is not None
    try:
        await _measure(session, plan, settings, figures, progress)
        figures.peak_rss_kib = session.peak_rss_kib()
        # The model thread frees closed documents' caches in turn: this answer comes after.
        await complete_in_new_document(session, "file:///bench/last.py", TINY_DOCUMENT)
        figures.closed_rss_kib = session.rss_kib()
        for warning in dict.fromkeys(session.warnings):
            progress(f"  server warning: {warning}")
    finally:
        await session.shutdown()
    return figures


@contextlib.asynccontextmanager
async def core_taken() -> AsyncIterator[None]:
    """Run the block while another process keeps one core busy, as a build or a test run does."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        await asyncio.sleep(0.5)  # until the scheduler has given it a core of its own
        yield
    finally:
        busy.kill()
        busy.wait()


def forget_int4_layers(model: str) -> None:
    """Remove the cached 4-bit layers of `model` (a server model spec), if there are any."""
    from phi3_lsp.int4_cache import int4_entry
    from phi3_lsp.sources import resolve_model

    weights_dir = resolve_model(model).weights_dir
    if weights_dir is not None:
        shutil.rmtree(int4_entry(weights_dir), ignore_errors=True)


async def _measure(
    session: ServerSession,
    plan: ServerPlan,
    settings: dict[str, Any],
    figures: ServerFigures,
    progress: Callable[[str], None],
) -> None:
    # The first completion is asked the moment the server says it is ready, as an editor's
    # user who types once the status bar says so: it may stop the warm-up and pay its rest.
    for index, prompt in enumerate(plan.prompts):
        progress(f"  prompt {prompt.label}")
        figures.prompts.append(await _measure_prompt(session, plan, prompt, index, settings))
    if plan.prompts:
        # Where decode passes are most of an answer, and a slow one shows most.
        progress(f"  prompt {plan.prompts[0].label} while another process keeps a core busy")
        async with core_taken():
            for number, text in enumerate(plan.prompts[0].full):
                figures.prompts[0].full_with_core_taken.append(
                    await complete_in_new_document(session, f"file:///bench/core{number}.py", text)
                )

    tiny = "file:///bench/tiny.py"
    session.open(tiny, TINY_DOCUMENT)
    for _ in range(50):
        figures.transport_seconds.append(await session.hover(tiny, types.Position(0, 2)))
    session.close(tiny)

    if len(plan.prompts) > 1:
        longest = plan.prompts[-1]
        progress(f"  prompt {longest.label}: the cursor moves while it is read")
        for number, text in enumerate(longest.full):
            moved, idle = await _move_while_reading(session, number, text)
            figures.prompts[-1].moved_while_reading.append(moved)
            figures.prompts[-1].moved_on_idle.append(idle)
        progress(f"  prompt {longest.label}: typing on while it is read")
        for number, text in enumerate(longest.full):
            typed, idle = await _type_while_reading(session, number, text)
            figures.prompts[-1].typed_while_reading.append(typed)
            figures.prompts[-1].typed_on_idle.append(idle)

    progress(f"  hovers on a {plan.long_document.count(chr(10))}-line document")
    long_uri = "file:///bench/long_document.py"
    session.open(long_uri, plan.long_document)
    # A user hovers well after a file opens: the first hover would also time reading the open
    # (~4 ms of 400 KB), the largest sample and so, of 50, their p99. It waits for it, untimed.
    await session.hover(long_uri, types.Position(line=0, character=0))
    for position in word_positions(plan.long_document, plan.hovers, seed=1):
        figures.hover_idle_seconds.append(await session.hover(long_uri, position))
    await _hover_while_completing(session, long_uri, plan, figures)
    # Each keystroke makes a new version of the document: the first hover on it.
    for position in word_positions(plan.long_document, EDITS_BEFORE_HOVER, seed=3):
        session.insert(long_uri, types.Position(line=position.line, character=0), " ")
        hover_at = types.Position(line=position.line, character=position.character + 1)
        figures.hover_after_edit_seconds.append(await session.hover(long_uri, hover_at))
    session.close(long_uri)

    progress(
        f"  edits after {LONG_EDIT_LINES} lines, over a {LONG_EDIT_CONTEXT_TOKENS}-token budget"
    )
    await session.configure({**settings, "contextTokens": LONG_EDIT_CONTEXT_TOKENS})
    figures.long_document_edits = await _edit_past_the_budget(
        session, "\n".join(plan.long_document.split("\n")[:LONG_EDIT_LINES]), 2 * plan.startups
    )
    await session.configure(settings)


async def _measure_prompt(
    session: ServerSession,
    plan: ServerPlan,
    prompt: PromptWork,
    index: int,
    settings: dict[str, Any],
) -> PromptFigures:
    figures = PromptFigures(label=prompt.label)
    uri_base = f"file:///bench/prompt{index}"

    async def complete_fresh(name: str, text: str) -> Completion:
        return await complete_in_new_document(session, f"{uri_base}_{name}.py", text)

    for number, text in enumerate(prompt.warmup):
        figures.warmup = await complete_fresh(f"warmup{number}", text)

    await session.configure({**settings, "maxNewTokens": 1})
    for number, text in enumerate(prompt.first_token):
        figures.first_token.append(await complete_fresh(f"first{number}", text))
    # The server's default answer budget: an early answer while generation goes on behind it.
    await session.configure({k: v for k, v in settings.items() if k != "answerBudgetMs"})
    for number, text in enumerate(prompt.first_answer):
        figures.first_answer.append(await complete_fresh(f"answer{number}", text))
        await session.wait_idle()
    await session.configure({**settings, "maxNewTokens": plan.max_new_tokens})

    await _measure_floor(plan, figures)
    for number, text in enumerate(prompt.full):
        uri = f"{uri_base}_full{number}.py"
        session.open(uri, text)
        full = await session.complete(uri, end_position(text))
        figures.full.append(full)
        if plan.measure_floor is not None:
            reads = await session.command("phi3.measureWeightReads")
            figures.weight_read_speeds.append(float(reads["bytesPerSecond"]))
        if full.text:
            # The user types the suggestion's first character: the rest should come back at once.
            cursor = session.type_at_end(uri, full.text[0])
            typed = await session.complete(uri, cursor)
            figures.typing_through.append(typed)
            figures.typing_through_expected.append(typed.text == full.text[1:])
            # Then a character the suggestion did not predict: a new answer is needed.
            cursor = session.type_at_end(uri, diverging_character(full.text[1:]))
            figures.edits.append(await session.complete(uri, cursor))
        session.close(uri)
    await _measure_floor(plan, figures)
    for number, text in enumerate(prompt.full):
        uri = f"{uri_base}_rested{number}.py"
        session.open(uri, text)
        figures.read_at_cursor_seconds.append(await session.read_at_cursor(uri, end_position(text)))
        figures.read_at_cursor.append(await session.complete(uri, end_position(text)))
        session.close(uri)
    return figures


async def _measure_floor(plan: ServerPlan, figures: PromptFigures) -> None:
    if plan.measure_floor is not None:
        floor = await asyncio.to_thread(plan.measure_floor)
        if floor is not None:
            figures.memory_floors.append(floor)


async def complete_in_new_document(session: ServerSession, uri: str, text: str) -> Completion:
    """A completion at the end of `text`, opened as a new document (no cache of it can answer)."""
    session.open(uri, text)
    completion = await session.complete(uri, end_position(text))
    session.close(uri)
    return completion


async def _move_while_reading(
    session: ServerSession, number: int, text: str
) -> tuple[Completion, Completion]:
    """A completion at the end of `text`, cancelled `MOVED_AFTER_SECONDS` later as the user
    clicks a line a third of the way down, and the completion asked there; then the same
    completion asked in a new document. Both are full answers."""
    uri = f"file:///bench/moved{number}.py"
    session.open(uri, text)
    request_id = f"read-then-moved-{number}"
    stale = asyncio.create_task(session.complete(uri, end_position(text), request_id))
    await asyncio.sleep(MOVED_AFTER_SECONDS)
    session.cancel(request_id)
    with contextlib.suppress(Exception):  # a cancelled request may answer with an error
        await stale
    lines = text.split("\n")
    above = "\n".join(lines[: len(lines) // 3 + 1])  # up to the end of the clicked line
    moved = await session.complete(uri, end_position(above))
    session.close(uri)
    return moved, await complete_in_new_document(session, f"file:///bench/idle{number}.py", above)


async def _type_while_reading(
    session: ServerSession, number: int, text: str
) -> tuple[Completion, Completion]:
    """A completion at the end of `text`; then `TYPED_WHILE_READING` typed there, a character
    every `KEYSTROKE_SECONDS`, each cancelling the last request and asking again. The answer
    after the last keystroke, then the same completion asked in a new document (full answers).
    """
    uri = f"file:///bench/typed{number}.py"
    session.open(uri, text)
    request_id = f"typed-{number}-0"
    pending = asyncio.create_task(session.complete(uri, end_position(text), request_id))
    for index, character in enumerate(TYPED_WHILE_READING, start=1):
        await asyncio.sleep(KEYSTROKE_SECONDS)
        session.cancel(request_id)
        with contextlib.suppress(Exception):  # a cancelled request may answer with an error
            await pending
        cursor = session.type_at_end(uri, character)
        request_id = f"typed-{number}-{index}"
        pending = asyncio.create_task(session.complete(uri, cursor, request_id))
    typed = await pending
    final_text = session.text(uri)
    session.close(uri)
    idle = await complete_in_new_document(
        session, f"file:///bench/typed_idle{number}.py", final_text
    )
    return typed, idle


async def _edit_past_the_budget(
    session: ServerSession, text: str, keystrokes: int
) -> list[Completion]:
    """Completions at the end of `text`, each after typing a character the last one did not
    predict: the prompt is cut from a text longer than the budget, and only its cut keeps
    the cached keys and values of the prompt usable from one keystroke to the next."""
    uri = "file:///bench/past_the_budget.py"
    session.open(uri, text)
    last = await session.complete(uri, end_position(text))  # cold: the whole prompt
    edits = []
    for _ in range(keystrokes):
        cursor = session.type_at_end(uri, diverging_character(last.text))
        last = await session.complete(uri, cursor)
        edits.append(last)
    session.close(uri)
    return edits


async def _hover_while_completing(
    session: ServerSession, uri: str, plan: ServerPlan, figures: ServerFigures
) -> None:
    """Hovers sent one after another while completions run on the same document; once there
    are enough, the running completion is cancelled and the wait for its end is timed."""
    text = plan.long_document
    lines = text.split("\n")
    positions = word_positions(text, plan.hovers, seed=2)
    cursor_line = len(lines) // 3
    while len(figures.hover_busy_seconds) < plan.hovers:
        # A new cursor line each time, so that no answer can come from a cache.
        cursor = types.Position(line=cursor_line, character=utf16_length(lines[cursor_line]))
        cursor_line = (cursor_line + 97) % len(lines)
        request_id = f"busy-completion-{figures.busy_completions}"
        completion = asyncio.create_task(session.complete(uri, cursor, request_id))
        figures.busy_completions += 1
        await asyncio.sleep(0)
        while not completion.done() and len(figures.hover_busy_seconds) < plan.hovers:
            seconds = await session.hover(uri, positions[len(figures.hover_busy_seconds)])
            if not completion.done():
                figures.hover_busy_seconds.append(seconds)
        if not completion.done():
            begun = time.perf_counter()
            session.cancel(request_id)
            with contextlib.suppress(Exception):  # a cancelled request may answer with an error
                await completion
            figures.cancel_seconds.append(time.perf_counter() - begun)
        else:
            await completion
