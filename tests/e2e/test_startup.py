"""Start-up across client capability profiles: a prompt initialize, then progress and status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types

from e2e.lsp_session import PROFILES, Phi3Client, hover_text, start, stop, vscode_capabilities
from phi3_lsp import generation as generation_module

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TEXT = "😀 The capital of France is"


@dataclass(frozen=True)
class Started:
    profile: str
    client: Phi3Client
    result: types.InitializeResult
    statuses_when_initialized: list[dict[str, Any]]


@pytest_asyncio.fixture(params=sorted(PROFILES), scope="module", loop_scope="module")
async def started(
    request: pytest.FixtureRequest, offline_pack: None, hf_home: Path
) -> AsyncIterator[Started]:
    """A SmolLM2 server initialized by a client with the given capabilities (one per profile)."""
    profile: str = request.param
    client = await start("smollm2-135m", hf_home, PROFILES[profile](), initialize=False)
    result = await client.initialize_session(
        types.InitializeParams(capabilities=PROFILES[profile]())
    )
    yield Started(profile, client, result, list(client.statuses))
    await stop(client)


async def test_initialize_answers_before_the_model_is_ready(
    started: Started,
) -> None:
    client = started.client
    # The answer came first: no status had said "ready" yet.
    assert all(status["state"] != "ready" for status in started.statuses_when_initialized)
    capabilities = started.result.capabilities
    assert capabilities.hover_provider
    assert capabilities.completion_provider is not None
    assert capabilities.inline_completion_provider is not None
    assert capabilities.execute_command_provider is not None
    assert set(capabilities.execute_command_provider.commands) >= {
        "phi3.showArchitecture",
        "phi3.status",
        "phi3.measureWeightReads",
    }

    ready = await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    assert ready["state"] == "ready"
    assert ready["weightsLoaded"] is True
    states = [status["state"] for status in client.statuses]
    assert states[0] == "loading"
    assert "loading" not in states[states.index("ready") :]


async def test_progress_goes_where_the_client_can_show_it(
    started: Started,
) -> None:
    profile, client = started.profile, started.client
    await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    supports_progress = PROFILES[profile]().window is not None
    if supports_progress:
        [reports] = client.progress_reports.values()  # one fresh token for the one load
        assert isinstance(reports[0], types.WorkDoneProgressBegin)
        assert "smollm2-135m" in reports[0].title
        assert any(isinstance(report, types.WorkDoneProgressReport) for report in reports)
        assert isinstance(reports[-1], types.WorkDoneProgressEnd)
    else:
        assert client.progress_reports == {}
        logged = [message.message for message in client.log_messages]
        assert any("Loading smollm2-135m" in message for message in logged)


async def test_reading_a_long_prompt_is_shown_where_the_client_can_show_it(
    started: Started,
) -> None:
    profile, client = started.profile, started.client
    await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    # A prompt of `contextTokens` (1,024 by default) tokens of real source: SmolLM2 in fp32 takes
    # seconds to read it on a CPU of this class, and a prompt read within a second shows nothing.
    source = Path(generation_module.__file__).read_text(encoding="utf-8")
    uri = client.open_text("long_source.py", source)
    earlier_tokens, earlier_logs = set(client.progress_reports), len(client.log_messages)
    seen = len(client.statuses)
    await client.inline(uri, source.count("\n"), 0)  # answers early; the model reads on
    await client.wait_for_status(lambda status: status["state"] == "ready", after=seen)
    new_progress = [
        reports for token, reports in client.progress_reports.items() if token not in earlier_tokens
    ]
    logged = [message.message for message in client.log_messages[earlier_logs:]]
    if PROFILES[profile]().window is not None:
        [(begin, *_, end)] = new_progress
        assert isinstance(begin, types.WorkDoneProgressBegin)
        assert begin.title == "Reading the prompt"
        assert isinstance(end, types.WorkDoneProgressEnd)
    else:
        assert new_progress == []
        # Once, not once per report: the reports themselves are only in the server's log.
        assert sum("Reading the prompt" in message for message in logged) == 1


async def test_hover_ranges_use_the_negotiated_position_encoding(
    started: Started,
) -> None:
    client, result = started.client, started.result
    await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    encoding = result.capabilities.position_encoding or types.PositionEncodingKind.Utf16
    # Code units of "😀 " in each encoding: the emoji is 2 in UTF-16, 4 in UTF-8, 1 in UTF-32.
    units = {"utf-16": 3, "utf-8": 5, "utf-32": 2}[str(getattr(encoding, "value", encoding))]
    uri = client.open_text("encoding.txt", TEXT)
    start = units + len("The ")
    hover = await client.hover_at(uri, 0, start + 1)
    assert "capital" in hover_text(hover)
    assert hover is not None
    assert hover.range == types.Range(
        start=types.Position(line=0, character=start),
        end=types.Position(line=0, character=start + len("capital")),
    )


async def test_commands_asked_while_the_model_loads_are_answered(
    offline_pack: None, hf_home: Path
) -> None:
    client = await start("smollm2-135m", hf_home, vscode_capabilities())
    try:
        asked_while = client.statuses[-1]["state"] if client.statuses else "loading"
        report = await client.command("phi3.showArchitecture")
        reads = await client.command("phi3.measureWeightReads")
    finally:
        await stop(client)
    assert asked_while == "loading"
    assert report["className"] == "LlamaForCausalLM"
    assert reads["bytesRead"] > 0
