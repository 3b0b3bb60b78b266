"""A client that leaves `window/workDoneProgress/create` unanswered: the statuses do not wait
for it, and once one has gone unanswered, later progress goes to the log without asking again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types

from e2e.lsp_session import (
    ANSWER_TIMEOUT,
    SMOLLM2_SETTINGS,
    Phi3Client,
    start,
    stop,
    vscode_capabilities,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

GAVE_UP = "did not answer for a progress bar"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def silent(
    offline_pack: None, hf_home: Path, tiny_phi3_dir: Path
) -> AsyncIterator[Phi3Client]:
    """The tiny Phi-3 loading for a client that holds every progress create unanswered."""
    client = await start(str(tiny_phi3_dir), hf_home, vscode_capabilities(), initialize=False)
    client.progress_creates_answered.clear()
    await client.initialize_session(types.InitializeParams(capabilities=vscode_capabilities()))
    yield client
    client.progress_creates_answered.set()  # late answers, which the server drops
    await stop(client)


async def test_statuses_do_not_wait_for_an_unanswered_progress_create(
    offline_pack: None, hf_home: Path, tiny_phi3_dir: Path
) -> None:
    # A client that answers the load's create only once a status has come after it: statuses
    # that waited for the answer would wait until the server gave up on it.
    client = await start(str(tiny_phi3_dir), hf_home, vscode_capabilities(), initialize=False)
    client.answer_creates_after_a_status = True
    try:
        await client.initialize_session(types.InitializeParams(capabilities=vscode_capabilities()))
        ready = await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
        assert ready["state"] == "ready"
        assert len(client.progress_creates) == 1  # the load's
        assert not any(GAVE_UP in message.message for message in client.log_messages)
        while not ended(client):  # its progress bar, once the server has its token
            await client.wait_for_notification(types.PROGRESS)
    finally:
        await stop(client)


async def logged(client: Phi3Client, text: str, *, after: int) -> None:
    """Wait until a log message at index ≥ `after` holds `text`."""

    async def scan() -> None:
        while not any(text in message.message for message in client.log_messages[after:]):
            await client.wait_for_notification(types.WINDOW_LOG_MESSAGE)

    await asyncio.wait_for(scan(), ANSWER_TIMEOUT)


def ended(client: Phi3Client) -> bool:
    """Whether a progress has ended at the client."""
    return any(
        isinstance(report, types.WorkDoneProgressEnd)
        for reports in client.progress_reports.values()
        for report in reports
    )


async def test_after_an_unanswered_create_later_progress_goes_to_the_log(
    silent: Phi3Client,
) -> None:
    while not any(GAVE_UP in message.message for message in silent.log_messages):
        await silent.wait_for_notification(types.WINDOW_LOG_MESSAGE)
    seen, logged_before = len(silent.statuses), len(silent.log_messages)
    await silent.change_settings({**SMOLLM2_SETTINGS, "model": "smollm2-135m"})
    ready = await silent.wait_for_status(
        lambda status: status["model"] == "smollm2-135m" and status["state"] != "loading",
        after=seen,
    )
    assert ready["state"] == "ready"
    assert len(silent.progress_creates) == 1  # not asked again
    # The log line may come just after the status that says it.
    await logged(silent, "smollm2-135m is ready", after=logged_before)
    messages = [message.message for message in silent.log_messages[logged_before:]]
    assert any("Loading smollm2-135m" in message for message in messages)
