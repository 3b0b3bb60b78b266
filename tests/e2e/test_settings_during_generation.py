"""Settings changed while the model generates apply to that generation: completions turned off
stop it (and a prompt read at the cursor), answer nothing more, and forget the suggestion it
was making; a lower `maxNewTokens` ends it at the new limit."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types

from e2e.lsp_session import Phi3Client, start_smollm2, stop

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# 400 tokens on one thread take SmolLM2 tens of seconds: the changes below come long before.
SETTINGS: dict[str, Any] = {
    "maxNewTokens": 400,
    "answerBudgetMs": 0,
    "threads": 1,
    "contextTokens": 4096,
    "int4Drafts": False,
}
documents = itertools.count(1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(offline_pack: None, hf_home: Path) -> AsyncIterator[Phi3Client]:
    client = await start_smollm2(hf_home, dict(SETTINGS))
    yield client
    await stop(client)


def endless(lines: int) -> str:
    """Numbered lines the model goes on numbering for as long as it may."""
    return "".join(
        f"# line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(lines)
    )


async def ask_at_the_end(client: Phi3Client, text: str) -> asyncio.Future[Any]:
    """A completion at the end of `text` in a new document, asked in the background."""
    uri = client.open_text(f"numbered-{next(documents)}.txt", text)
    return asyncio.ensure_future(client.inline(uri, text.count("\n"), 0))


async def turn_completions_off_and_see_it_stop(client: Phi3Client, seen: int) -> None:
    """Turn completions off while the generation asked after status `seen` runs: it stops
    rather than runs to its end."""
    await client.change_settings({**SETTINGS, "inlineCompletions": False})
    await client.wait_for_status(lambda status: status["state"] == "ready", after=seen)
    assert client.finished_generations_since(seen) == 0, "it ran to its end"


async def test_completions_turned_off_answer_the_request_in_flight_with_nothing(
    session: Phi3Client,
) -> None:
    seen = len(session.statuses)
    request = await ask_at_the_end(session, endless(10))
    await session.wait_for_status(lambda status: status["state"] == "generating", after=seen)
    try:
        await turn_completions_off_and_see_it_stop(session, seen)
        assert await request == []
    finally:
        await session.change_settings(SETTINGS)


async def test_completions_turned_off_stop_the_continuation_in_the_background(
    session: Phi3Client,
) -> None:
    await session.change_settings({**SETTINGS, "answerBudgetMs": 1})
    try:
        seen = len(session.statuses)
        [early] = await (await ask_at_the_end(session, endless(10)))
        assert isinstance(early.insert_text, str) and early.insert_text.strip()
        await turn_completions_off_and_see_it_stop(session, seen)
    finally:
        await session.change_settings(SETTINGS)


async def test_a_lower_max_new_tokens_ends_the_running_generation_at_the_new_limit(
    session: Phi3Client,
) -> None:
    seen = len(session.statuses)
    earlier = set(session.progress_reports)
    # ~2,000 tokens: one thread reads them for seconds, and the change comes meanwhile.
    request = await ask_at_the_end(session, endless(150))
    await session.wait_for_progress(
        lambda token, report: isinstance(report, types.WorkDoneProgressReport), skip=earlier
    )
    await session.change_settings({**SETTINGS, "maxNewTokens": 5})
    try:
        [item] = await request
        assert isinstance(item.insert_text, str) and item.insert_text.strip()
        ended = await session.wait_for_status(lambda status: status["state"] == "ready", after=seen)
        assert session.finished_generations_since(seen) == 1, "it was stopped, not ended"
        assert ended["lastTokens"] == 5
    finally:
        await session.change_settings(SETTINGS)


async def test_a_suggestion_stopped_by_completions_turned_off_is_not_typed_through_later(
    session: Phi3Client,
) -> None:
    # Answered once the first line is whole; the rest runs on in the background.
    first_line = {**SETTINGS, "answerBudgetMs": 60000}
    await session.change_settings(first_line)
    try:
        text = endless(10)
        seen = len(session.statuses)
        uri = session.open_text(f"numbered-{next(documents)}.txt", text)
        [early] = await session.inline(uri, text.count("\n"), 0)
        assert isinstance(early.insert_text, str) and early.insert_text.strip()
        await turn_completions_off_and_see_it_stop(session, seen)
        await session.change_settings(first_line)
        # The user types the first characters of the suggestion stopped above.
        typed = early.insert_text[:3]
        session.replace_text(uri, text + typed, version=2)
        seen = len(session.statuses)
        [item] = await session.inline(uri, text.count("\n"), len(typed))
        assert isinstance(item.insert_text, str) and item.insert_text.strip()
        assert session.generations_since(seen) == 1, "answered from the stopped suggestion"
        await turn_completions_off_and_see_it_stop(session, seen)
    finally:
        await session.change_settings(SETTINGS)


async def test_completions_turned_off_stop_a_prompt_read_at_the_cursor(session: Phi3Client) -> None:
    text = endless(150)  # ~2,000 tokens: one thread reads them for seconds
    uri = session.open_text(f"numbered-{next(documents)}.txt", text)
    earlier = set(session.progress_reports)
    read = asyncio.ensure_future(session.read_at_cursor(uri, text.count("\n"), 0))
    await session.wait_for_progress(
        lambda token, report: isinstance(report, types.WorkDoneProgressReport), skip=earlier
    )
    await session.change_settings({**SETTINGS, "inlineCompletions": False})
    try:
        kept = await read
        assert kept is None or kept["cachedTokens"] < kept["promptTokens"] - 1, "read to its end"
    finally:
        await session.change_settings(SETTINGS)
