"""What readies the model for completions runs only while they are on.

A user who turned `inlineCompletions` off does not have the CPU busy, nor memory held, for
completions: a model loaded meanwhile neither warms up nor takes its 4-bit drafts until they are
turned on again, turning them off drops the drafts, and completions are then the model's own,
asked at once or after the warm-up. A completion still waiting as they are turned off shows
nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types

from e2e.lsp_session import (
    ANSWER_TIMEOUT,
    SMOLLM2_SETTINGS,
    Phi3Client,
    inline_params,
    start_smollm2,
    stop,
)
from e2e.test_memory import resident_mib
from phi3_lsp.cpu_kernels import own_fp32_kernel, own_kernels

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

OFF = {**SMOLLM2_SETTINGS, "inlineCompletions": False}
PROMPT = "The capital of France is"
WARM_UP_LOGS = ("Decode passes choose among", "The warm-up of")
"""What the server logs of a warm-up: one run to its end, or one stopped early."""
DRAFTS_LOGS = ("with 4-bit drafts", "linear layers in 4 bits")
"""What the server logs of 4-bit drafts: loaded, or their layers made."""
DRAFTS_LOADED = re.compile(r"decodes with 4-bit drafts \(loaded in [\d.]+ s, ([\d.]+) GB\)")
DRAFTS_HERE = own_kernels() is not None and own_fp32_kernel() is not None
"""fp32 takes 4-bit drafts on this CPU (elsewhere it drafts from the text only)."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def started_off(offline_pack: None, hf_home: Path) -> AsyncIterator[Phi3Client]:
    """SmolLM2, loaded while completions are off."""
    client = await start_smollm2(hf_home, OFF)
    yield client
    await stop(client)


async def logs_after(client: Phi3Client, logged: int, lines: tuple[str, ...]) -> list[str]:
    """What the server logged of `lines` after its first `logged` log messages, once the work
    queued on the model thread before now has ended (timing weight reads runs after it)."""
    await client.command("phi3.measureWeightReads")
    return [
        message.message
        for message in client.log_messages[logged:]
        if any(line in message.message for line in lines)
    ]


async def drafts_in_use(client: Phi3Client) -> bool:
    """`int4Drafts` of `phi3.status`, once the drafts' loads or drops queued before now ended."""
    await client.command("phi3.measureWeightReads")
    status = await client.command("phi3.status")
    return bool(status["int4Drafts"])


async def test_a_model_loaded_while_completions_are_off_readies_for_them_once_they_are_on(
    started_off: Phi3Client,
) -> None:
    assert await logs_after(started_off, 0, WARM_UP_LOGS + DRAFTS_LOGS) == []
    assert await drafts_in_use(started_off) is False
    logged = len(started_off.log_messages)
    await started_off.change_settings(SMOLLM2_SETTINGS)
    [warmed_up] = await logs_after(started_off, logged, WARM_UP_LOGS)
    assert WARM_UP_LOGS[0] in warmed_up  # run to its end: nothing asked for a completion
    assert await drafts_in_use(started_off) is DRAFTS_HERE
    uri = started_off.open_text("after-the-warm-up.txt", PROMPT)
    [item] = await started_off.inline(uri, 0, len(PROMPT))
    assert isinstance(item.insert_text, str) and item.insert_text.startswith(" Paris")


async def test_turning_completions_off_gives_the_memory_of_the_4bit_drafts_back(
    started_off: Phi3Client,
) -> None:
    if not DRAFTS_HERE:
        pytest.skip("fp32 takes no 4-bit drafts on this CPU")
    # Loaded from their cached layers: making them (the first time) holds more for a while.
    await started_off.change_settings(OFF)
    await started_off.change_settings(SMOLLM2_SETTINGS)
    assert await drafts_in_use(started_off)
    *_, loaded = [
        float(found.group(1))
        for message in started_off.log_messages
        if (found := DRAFTS_LOADED.search(message.message))
    ]
    uri = started_off.open_text("with-drafts.txt", PROMPT)
    await started_off.inline(uri, 0, len(PROMPT))
    assert started_off.statuses[-1]["int4Drafts"] is True  # the completion's statuses say so
    with_drafts = resident_mib(started_off)
    await started_off.change_settings(OFF)
    assert await drafts_in_use(started_off) is False
    # Said at once: no change of state may come while completions are off.
    assert started_off.statuses[-1]["state"] == "ready"
    assert started_off.statuses[-1]["int4Drafts"] is False
    given_back = with_drafts - resident_mib(started_off)
    # Most of what their load said they take (their layers' bytes) leaves the process.
    assert given_back > 0.5 * loaded * 1e9 / 2**20, (given_back, loaded)
    # Turned on again, they load again: completions draft as before.
    await started_off.change_settings(SMOLLM2_SETTINGS)
    assert await drafts_in_use(started_off)


async def test_a_reload_while_completions_are_off_warms_nothing_up(
    started_off: Phi3Client,
) -> None:
    await started_off.change_settings(OFF)
    logged, seen = len(started_off.log_messages), len(started_off.statuses)
    # trustRemoteCode loads the model again (SmolLM2 runs no code of its own either way).
    await started_off.change_settings({**OFF, "trustRemoteCode": True})
    loading = await started_off.wait_for_status(
        lambda status: status["state"] == "loading", after=seen
    )
    # After the reload's start: turning completions off may have said "ready" again before it.
    ready = await started_off.wait_for_status(
        lambda status: status["state"] in ("ready", "error"),
        after=next(at for at, status in enumerate(started_off.statuses) if status is loading),
    )
    assert ready["state"] == "ready" and ready["weightsLoaded"] is True
    assert await logs_after(started_off, logged, WARM_UP_LOGS + DRAFTS_LOGS) == []
    assert await drafts_in_use(started_off) is False
    # Asked as they are turned on: it stops the warm-up they queue, or finds it done.
    started_off.announce_settings({**SMOLLM2_SETTINGS, "trustRemoteCode": True})
    uri = started_off.open_text("at-once.txt", PROMPT)
    [item] = await started_off.inline(uri, 0, len(PROMPT))
    assert isinstance(item.insert_text, str) and item.insert_text.startswith(" Paris")


COUNTING = "1, 2, 3, 4, 5,\n6, 7, 8, 9, 10,\n11, 12, 13, 14, 15,\n"
"""Text whose continuation goes on for many lines: it is still being made as they turn off."""


async def test_a_completion_waiting_as_completions_are_turned_off_shows_nothing(
    started_off: Phi3Client,
) -> None:
    long_answers = {**SMOLLM2_SETTINGS, "maxNewTokens": 400, "answerBudgetMs": 60_000}
    await started_off.change_settings(long_answers)
    await started_off.command("phi3.measureWeightReads")  # once loaded (it may reload) and idle
    uri = started_off.open_text("counting.txt", COUNTING)
    seen = len(started_off.statuses)
    # Answered once its first line is complete; the model goes on in the background.
    [first] = await started_off.inline(uri, 3, 0)
    assert isinstance(first.insert_text, str) and first.insert_text.strip()
    # Asked again there, with no budget: it waits for the whole continuation.
    await started_off.change_settings({**long_answers, "answerBudgetMs": 0})
    await started_off.command("phi3.status")  # answered once that change is in
    # Sent at once (pytest-lsp's send_request_async sends only once awaited), then the change:
    # it stops the continuation, which had a line to show.
    waiting = started_off.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 3, 0)
    )
    started_off.announce_settings({**long_answers, "answerBudgetMs": 0, "inlineCompletions": False})
    answer = await asyncio.wait_for(asyncio.wrap_future(waiting), ANSWER_TIMEOUT)
    assert isinstance(answer, types.InlineCompletionList) and not answer.items
    # The first one's continuation stopped, and no other began.
    assert started_off.generations_since(seen) == 1
    assert started_off.finished_generations_since(seen) == 0
