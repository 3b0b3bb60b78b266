"""The warm-up after a load readies the model for completions, so it runs only while they are on.

A user who turned `inlineCompletions` off does not have the CPU busy warming the model up for
completions: a model loaded meanwhile warms up once they are turned on again, and completions
are then the model's own, asked at once or after the warm-up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from e2e.lsp_session import SMOLLM2_SETTINGS, Phi3Client, start_smollm2, stop

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

OFF = {**SMOLLM2_SETTINGS, "inlineCompletions": False}
PROMPT = "The capital of France is"
WARM_UP_LOGS = ("Decode passes choose among", "The warm-up of")
"""What the server logs of a warm-up: one run to its end, or one stopped early."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def started_off(offline_pack: None, hf_home: Path) -> AsyncIterator[Phi3Client]:
    """SmolLM2, loaded while completions are off."""
    client = await start_smollm2(hf_home, OFF)
    yield client
    await stop(client)


async def warm_ups_after(client: Phi3Client, logged: int) -> list[str]:
    """What the server logged of warm-ups after its first `logged` log messages, once the work
    queued on the model thread before now has ended (timing weight reads runs after it)."""
    await client.command("phi3.measureWeightReads")
    return [
        message.message
        for message in client.log_messages[logged:]
        if any(line in message.message for line in WARM_UP_LOGS)
    ]


async def test_a_model_loaded_while_completions_are_off_warms_up_once_they_are_on(
    started_off: Phi3Client,
) -> None:
    assert await warm_ups_after(started_off, 0) == []
    logged = len(started_off.log_messages)
    await started_off.change_settings(SMOLLM2_SETTINGS)
    [warmed_up] = await warm_ups_after(started_off, logged)
    assert WARM_UP_LOGS[0] in warmed_up  # run to its end: nothing asked for a completion
    uri = started_off.open_text("after-the-warm-up.txt", PROMPT)
    [item] = await started_off.inline(uri, 0, len(PROMPT))
    assert isinstance(item.insert_text, str) and item.insert_text.startswith(" Paris")


async def test_a_reload_while_completions_are_off_warms_nothing_up(
    started_off: Phi3Client,
) -> None:
    await started_off.change_settings(OFF)
    logged, seen = len(started_off.log_messages), len(started_off.statuses)
    # trustRemoteCode loads the model again (SmolLM2 runs no code of its own either way).
    await started_off.change_settings({**OFF, "trustRemoteCode": True})
    await started_off.wait_for_status(lambda status: status["state"] == "loading", after=seen)
    ready = await started_off.wait_for_status(
        lambda status: status["state"] in ("ready", "error"), after=seen
    )
    assert ready["state"] == "ready" and ready["weightsLoaded"] is True
    assert await warm_ups_after(started_off, logged) == []
    # Asked as they are turned on: it stops the warm-up they queue, or finds it done.
    started_off.announce_settings({**SMOLLM2_SETTINGS, "trustRemoteCode": True})
    uri = started_off.open_text("at-once.txt", PROMPT)
    [item] = await started_off.inline(uri, 0, len(PROMPT))
    assert isinstance(item.insert_text, str) and item.insert_text.startswith(" Paris")
