"""What a user can get wrong: a model that cannot load, bad settings, unknown commands.

The server says what to fix, answers every request with an empty result or a proper error,
and recovers when the model is changed, without a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from e2e.lsp_session import ANSWER_TIMEOUT, Phi3Client, hover_text, start, stop, vscode_capabilities

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMPT = "The capital of France is"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def broken(
    offline_pack: None, hf_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Phi3Client]:
    """A server asked for a model folder that does not exist, with one invalid setting."""
    missing = tmp_path_factory.mktemp("models") / "no-such-model"
    client = await start(
        str(missing), hf_home, vscode_capabilities(), settings={"maxNewTokens": "lots"}
    )
    await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    yield client
    await stop(client)


async def test_a_model_that_cannot_load_is_an_error_with_the_fix(broken: Phi3Client) -> None:
    status = broken.statuses[-1]
    assert status["state"] == "error"
    assert "no-such-model" in status["message"]
    assert "phi3.model" in status["message"]  # the fix: which setting to change
    errors = [m.message for m in broken.messages if m.type == types.MessageType.Error]
    assert errors == [status["message"]]


async def test_an_invalid_setting_is_reported_and_its_default_kept(broken: Phi3Client) -> None:
    warnings = [m.message for m in broken.messages if m.type == types.MessageType.Warning]
    assert any("phi3.maxNewTokens must be an integer" in message for message in warnings)


async def test_requests_answer_empty_while_no_model_is_loaded(broken: Phi3Client) -> None:
    uri = broken.open_text("broken.txt", PROMPT)
    assert await broken.inline(uri, 0, len(PROMPT)) == []
    assert await broken.hover_at(uri, 0, 4) is None
    params = types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=0, character=len(PROMPT)),
    )
    answer = await asyncio.wait_for(broken.text_document_completion_async(params), ANSWER_TIMEOUT)
    assert isinstance(answer, types.CompletionList) and list(answer.items) == []
    # One message for the failed load, not one per request.
    assert len([m for m in broken.messages if m.type == types.MessageType.Error]) == 1


async def test_the_architecture_request_fails_with_the_reason(broken: Phi3Client) -> None:
    with pytest.raises(JsonRpcException, match="no-such-model"):
        await broken.command("phi3.showArchitecture")


async def test_an_unknown_command_is_an_error_and_the_server_keeps_serving(
    broken: Phi3Client,
) -> None:
    with pytest.raises(JsonRpcException, match=r"phi3\.doesNotExist"):
        await broken.command("phi3.doesNotExist")
    with pytest.raises(JsonRpcException):
        await broken.command("phi3.status", "an unexpected argument")
    assert (await broken.command("phi3.status"))["state"] == "error"


async def test_a_new_model_loads_without_a_restart(broken: Phi3Client) -> None:
    seen = len(broken.statuses)
    await broken.change_settings({"model": "microsoft/Phi-3-mini-4k-instruct"})
    ready = await broken.wait_for_status(
        lambda status: status["state"] in ("ready", "error"), after=seen
    )
    assert ready["state"] == "ready"
    assert ready["model"] == "microsoft/Phi-3-mini-4k-instruct"
    assert broken.statuses[seen]["state"] == "loading"
    uri = broken.open_text("recovered.txt", PROMPT)
    hover = await broken.hover_at(uri, 0, PROMPT.index("France"))
    assert "| 3444 |" in hover_text(hover)
    report = await broken.command("phi3.showArchitecture")
    assert report["className"] == "Phi3ForCausalLM"
