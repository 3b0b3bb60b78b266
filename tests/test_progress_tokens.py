"""A progress that ended (a load, a long prompt's reading) leaves nothing behind: pygls kept
each token it was given, and its future, for as long as the server ran."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any

from lsprotocol import types

from in_memory_server import answer, sent_messages, serve_in_memory
from phi3_lsp.features.loading import LoadReporter
from phi3_lsp.model_host import LoadOutcome
from phi3_lsp.prompt_reading import PromptReading
from phi3_lsp.server import Phi3LanguageServer

WAIT_SECONDS = 60.0
SHOWS_PROGRESS = types.ClientCapabilities(
    window=types.WindowClientCapabilities(work_done_progress=True)
)


async def until(condition: Callable[[], bool]) -> None:
    """Wait until `condition()` holds; a message that never comes fails the test, not hangs it."""
    async with asyncio.timeout(WAIT_SECONDS):
        while not condition():
            await asyncio.sleep(0)


async def answer_the_create(server: Phi3LanguageServer, sent_before: int, sent: io.BytesIO) -> None:
    """Wait for the server's `window/workDoneProgress/create`, then accept it."""
    creates: list[dict[str, Any]] = []

    def asked() -> bool:
        creates[:] = [
            message
            for message in sent_messages(sent)[sent_before:]
            if message.get("method") == types.WINDOW_WORK_DONE_PROGRESS_CREATE
        ]
        return bool(creates)

    await until(asked)
    answer(server, creates[0]["id"], None)


def progress_ends(sent: io.BytesIO) -> int:
    return sum(
        1
        for message in sent_messages(sent)
        if message.get("method") == types.PROGRESS and message["params"]["value"]["kind"] == "end"
    )


def test_ended_loads_and_prompt_readings_keep_no_token() -> None:
    async def session() -> tuple[int, int]:
        server, sent = serve_in_memory(SHOWS_PROGRESS)
        server._loop = asyncio.get_running_loop()  # as `initialize` binds it
        reporter = LoadReporter(server)
        reporter.start()
        for shown in range(3):
            before = len(sent_messages(sent))
            reporter.load_began("smollm2-135m")
            await answer_the_create(server, before, sent)
            reporter.load_ended(LoadOutcome(model="smollm2-135m"))
            before = len(sent_messages(sent))
            reporter.prompt_read(PromptReading(read=100, total=1000))
            await answer_the_create(server, before, sent)
            reporter.prompt_read(PromptReading(read=1000, total=1000, ended=True))
            ends = 2 * (shown + 1)
            await until(lambda: progress_ends(sent) == ends)  # noqa: B023 (awaited here)
        return progress_ends(sent), len(server.work_done_progress.tokens)

    ended, kept = asyncio.run(session())
    assert ended == 6  # three loads and three readings, each shown and ended
    assert kept == 0
