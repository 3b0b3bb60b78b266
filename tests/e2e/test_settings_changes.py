"""Settings a client gets wrong or answers badly: the settings in force stay, and so does the model.

A pull answered too late, answers that arrive out of order, a change without a phi3
section, and an invalid value must neither reset the other settings to their defaults nor
reload the model with them; a late answer must not reach the user as a server error.
"""

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

# trustRemoteCode on (SmolLM2 runs no code of its own either way): a reset to the default
# (off) would reload the model, which the statuses show.
IN_FORCE: dict[str, Any] = {
    "trustRemoteCode": True,
    "threads": 1,
    "maxNewTokens": 4,
    "answerBudgetMs": 0,
}
PULL_TIMEOUT_SECONDS = 5.0  # the server's wait for a pull's answer

completions = itertools.count(1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(offline_pack: None, hf_home: Path) -> AsyncIterator[Phi3Client]:
    client = await start_smollm2(hf_home, dict(IN_FORCE))
    yield client
    await stop(client)


async def new_completion_tokens(client: Phi3Client) -> int:
    """Tokens generated for a fresh prompt in a new document: `maxNewTokens` in force."""
    text = f"Document number {next(completions)} says that the capital of France is"
    uri = client.open_text(f"{text}.txt", text)
    assert await client.inline(uri, 0, len(text))
    tokens: int = (await client.command("phi3.status"))["lastTokens"]
    return tokens


def late(seconds: float) -> Any:
    async def answer() -> None:
        await asyncio.sleep(seconds)

    return answer


def loads_since(client: Phi3Client, index: int) -> int:
    return sum(status["state"] == "loading" for status in client.statuses[index:])


def errors_shown(client: Phi3Client) -> list[str]:
    return [m.message for m in client.messages if m.type == types.MessageType.Error]


async def test_the_settings_in_force_are_the_starting_ones(session: Phi3Client) -> None:
    assert await new_completion_tokens(session) == IN_FORCE["maxNewTokens"]


async def test_a_change_without_a_phi3_section_keeps_the_settings(session: Phi3Client) -> None:
    seen = len(session.statuses)
    session.set_configuration({})  # the client has no phi3 section: its pull answers null
    session.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"otherTool": {"enabled": True}})
    )
    assert await new_completion_tokens(session) == IN_FORCE["maxNewTokens"]
    assert loads_since(session, seen) == 0
    session.set_configuration({"phi3": dict(IN_FORCE)})


async def test_a_pull_answered_too_late_keeps_the_settings_and_shows_no_error(
    session: Phi3Client,
) -> None:
    seen = len(session.statuses)
    session.pull_answers.append(late(PULL_TIMEOUT_SECONDS + 1))
    await session.change_settings({})  # had it been read: every key back to its default
    assert await new_completion_tokens(session) == IN_FORCE["maxNewTokens"]
    await asyncio.sleep(2)  # the late answer arrives meanwhile
    assert await new_completion_tokens(session) == IN_FORCE["maxNewTokens"]
    assert loads_since(session, seen) == 0
    assert errors_shown(session) == []


@pytest.mark.parametrize(
    "result", [None, {"phi3": {"maxNewTokens": 6}}, "phi3"], ids=["null", "an object", "a string"]
)
async def test_a_pull_answered_without_an_array_takes_the_pushed_settings_at_once(
    session: Phi3Client, result: object
) -> None:
    logged, shown = len(session.log_messages), len(session.messages)
    session.pull_results.append(result)
    pushed = {**IN_FORCE, "maxNewTokens": 5}
    session.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"phi3": pushed})
    )
    try:
        # The settings that came with the change, as when the pull fails.
        assert await new_completion_tokens(session) == 5
        assert [m.message for m in session.messages[shown:]] == []
        # One line says why, and no wait for an answer that has come.
        said = [m for m in session.log_messages[logged:] if m.type <= types.MessageType.Warning]
        assert [m.type for m in said] == [types.MessageType.Warning]
        assert "settings" in said[0].message and "does not fit the protocol" in said[0].message
    finally:
        await session.change_settings(dict(IN_FORCE))


async def test_the_newest_change_wins_over_an_older_answer_that_comes_last(
    session: Phi3Client,
) -> None:
    # The first pull is answered late with the settings of its time, the second at once.
    session.pull_answers += [late(1.5), late(0)]
    await session.change_settings({**IN_FORCE, "maxNewTokens": 6})
    await session.change_settings({**IN_FORCE, "maxNewTokens": 3})
    await asyncio.sleep(2)
    assert await new_completion_tokens(session) == 3


async def test_an_invalid_value_keeps_the_one_in_force_and_is_said_once(
    session: Phi3Client,
) -> None:
    seen, shown = len(session.statuses), len(session.messages)
    await session.change_settings({**IN_FORCE, "threads": 10_000})
    assert await new_completion_tokens(session) == IN_FORCE["maxNewTokens"]
    await session.change_settings({**IN_FORCE, "threads": 10_000, "maxNewTokens": 5})
    assert await new_completion_tokens(session) == 5
    assert loads_since(session, seen) == 0
    warnings = [m.message for m in session.messages[shown:] if m.type == types.MessageType.Warning]
    assert len(warnings) == 1
    assert "phi3.threads must be at most" in warnings[0]
    assert warnings[0].endswith("Keeping 1.")
    # In the output too, where it stays after the toast is gone.
    logged = [m.message for m in session.log_messages if "Setting not taken" in m.message]
    assert logged == [f"phi3_lsp.server: Setting not taken: {warnings[0].split(': ', 1)[1]}"]


async def test_a_thread_count_change_takes_effect_without_loading_the_model_again(
    session: Phi3Client,
) -> None:
    seen, logged = len(session.statuses), len(session.log_messages)
    await session.change_settings({**IN_FORCE, "threads": 2})
    assert await new_completion_tokens(session) == IN_FORCE["maxNewTokens"]
    await session.change_settings(dict(IN_FORCE))
    assert await new_completion_tokens(session) == IN_FORCE["maxNewTokens"]
    assert loads_since(session, seen) == 0
    moves = [m.message for m in session.log_messages[logged:] if " now runs on " in m.message]
    assert [move.rsplit(" now ", 1)[1] for move in moves] == [
        "runs on 2 torch threads",
        "runs on 1 torch thread",
    ]


def warnings_since(client: Phi3Client, shown: int) -> list[str]:
    return [m.message for m in client.messages[shown:] if m.type == types.MessageType.Warning]


async def test_settings_sent_outside_the_section_bring_no_warning_back(
    session: Phi3Client,
) -> None:
    await session.change_settings(dict(IN_FORCE))  # no problem left from an earlier test
    await session.command("phi3.status")  # answered once that change is in
    shown = len(session.messages)
    invalid = {**IN_FORCE, "threads": 10_000}
    await session.change_settings(invalid)
    await session.command("phi3.status")
    [invalid_warning] = warnings_since(session, shown)
    assert "phi3.threads must be at most" in invalid_warning
    # A push of settings by name, without the section; the pull finds no phi3 section.
    session.set_configuration({})
    session.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"maxNewTokens": 5})
    )
    await session.command("phi3.status")
    [_, unread_warning] = warnings_since(session, shown)
    assert 'Not read, as not inside a "phi3" section: maxNewTokens.' in unread_warning
    # The invalid value is still there at the next change: said once, it is not said again.
    await session.change_settings({**invalid, "maxNewTokens": 5})
    assert await new_completion_tokens(session) == 5
    assert warnings_since(session, shown) == [invalid_warning, unread_warning]
    # Put right, then made again: a new problem, said again.
    await session.change_settings(dict(IN_FORCE))
    await session.change_settings(invalid)
    await session.command("phi3.status")
    assert warnings_since(session, shown) == [invalid_warning, unread_warning, invalid_warning]
