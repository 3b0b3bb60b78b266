"""Requests sent after a settings change are answered under the settings it brings, also while
the server still pulls them from a client that answers `workspace/configuration` late.

Completions wait for the pull; so do hovers and the commands: asked right after a switch of
model, none of them answers for the model that was in force before. A document closed during
the wait is answered as one never opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types

from e2e.lsp_session import (
    ANSWER_TIMEOUT,
    READ_AT_CURSOR,
    Phi3Client,
    hover_text,
    inline_params,
    start,
    stop,
    vscode_capabilities,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TEXT = "The capital of France is Paris."
PULL_ANSWERED_AFTER_SECONDS = 1.5
NEW_MODEL = "smollm2-135m"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tiny(offline_pack: None, hf_home: Path, tiny_phi3_dir: Path) -> AsyncIterator[Phi3Client]:
    """A server with the tiny Phi-3 loaded (Phi-3's tokenizer, 2 layers)."""
    client = await start(str(tiny_phi3_dir), hf_home, vscode_capabilities(), {})
    ready = await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    assert ready["state"] == "ready"
    yield client
    await stop(client)


async def test_hovers_and_commands_asked_during_a_late_pull_answer_for_the_new_model(
    tiny: Phi3Client, tiny_phi3_dir: Path
) -> None:
    uri = tiny.open_text("capital.txt", TEXT)
    tiny_hover = hover_text(await tiny.hover_at(uri, 0, 6))
    tiny_reads = await tiny.command("phi3.measureWeightReads")
    assert "capital" in tiny_hover

    async def late() -> None:
        await asyncio.sleep(PULL_ANSWERED_AFTER_SECONDS)

    tiny.pull_answers.append(late)
    tiny.announce_settings({"model": NEW_MODEL})  # asked at once, not after the pull
    hover, architecture, reads, status = await asyncio.gather(
        tiny.hover_at(uri, 0, 6),
        tiny.command("phi3.showArchitecture"),
        tiny.command("phi3.measureWeightReads"),
        tiny.command("phi3.status"),
    )

    await tiny.wait_for_status(
        lambda status: status["model"] == NEW_MODEL and status["state"] in ("ready", "error")
    )
    new_hover = hover_text(await tiny.hover_at(uri, 0, 6))
    assert new_hover != tiny_hover
    # Before the new tokenizer is read there is no hover: never the tiny Phi-3's tokens.
    assert hover_text(hover) in ("", new_hover)
    assert architecture["model"] == NEW_MODEL
    assert architecture["className"] == "LlamaForCausalLM"
    assert status["model"] == NEW_MODEL
    assert reads["bytesRead"] != tiny_reads["bytesRead"]
    assert reads["bytesRead"] == (await tiny.command("phi3.measureWeightReads"))["bytesRead"]


def hold_the_next_pull(client: Phi3Client) -> asyncio.Event:
    """Announce the settings as they are, and hold the server's pull of them until the event
    returned is set."""
    answer = asyncio.Event()

    async def held() -> None:
        await answer.wait()

    client.pull_answers.append(held)
    settings = client.get_configuration(section="phi3")
    assert isinstance(settings, dict)
    client.announce_settings(settings)
    return answer


def close(client: Phi3Client, uri: str) -> None:
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )


async def send_at_the_end(client: Phi3Client, uri: str, method: str) -> asyncio.Future[Any]:
    """Send `method` at the end of `TEXT` in `uri`, as a hover, a `phi3/readAtCursor` or a
    completion; its answer to await."""
    document = types.TextDocumentIdentifier(uri=uri)
    position = types.Position(line=0, character=len(TEXT) - 1)
    params: object = types.TextDocumentPositionParams(text_document=document, position=position)
    # Completions after the final ".": before it, a model that writes "." adds nothing.
    after = types.Position(line=0, character=len(TEXT))
    if method == types.TEXT_DOCUMENT_HOVER:
        params = types.HoverParams(text_document=document, position=position)
    elif method == types.TEXT_DOCUMENT_INLINE_COMPLETION:
        params = inline_params(uri, after.line, after.character)
    elif method == types.TEXT_DOCUMENT_COMPLETION:
        params = types.CompletionParams(text_document=document, position=after)
    answer = asyncio.ensure_future(client.protocol.send_request_async(method, params))  # type: ignore[no-untyped-call]
    await asyncio.sleep(0)  # pytest-lsp sends it in the task's first step
    return answer


def has_something(answer: object) -> bool:
    """Whether an answer gives the user anything: a hover, a read, a completion item."""
    if isinstance(answer, types.InlineCompletionList | types.CompletionList):
        return bool(answer.items)
    if isinstance(answer, list):
        return bool(answer)
    return answer is not None


@pytest.mark.parametrize("reopened", [False, True], ids=["closed", "closed and opened again"])
@pytest.mark.parametrize(
    "method",
    [
        types.TEXT_DOCUMENT_HOVER,
        READ_AT_CURSOR,
        types.TEXT_DOCUMENT_INLINE_COMPLETION,
        types.TEXT_DOCUMENT_COMPLETION,
    ],
)
async def test_a_document_closed_while_a_request_waits_for_a_pull_is_answered_with_nothing(
    tiny: Phi3Client, method: str, reopened: bool
) -> None:
    name = f"closed-{method.replace('/', '-')}-{reopened}.txt"
    uri = tiny.open_text(name, TEXT)
    pull_answered = hold_the_next_pull(tiny)
    answer = await send_at_the_end(tiny, uri, method)
    # Answered at once, so read after the request above: that one has read the document by
    # the time the close comes, and waits for the pull.
    assert await tiny.hover_at("untitled:never-opened.txt", 0, 0) is None
    close(tiny, uri)
    if reopened:  # a new document, though of the same text: the request was about the old
        tiny.open_text(name, TEXT)
    pull_answered.set()
    assert not has_something(await asyncio.wait_for(answer, ANSWER_TIMEOUT))
    if not reopened:
        tiny.open_text(name, TEXT)
    # Asked of the document open now, it is answered.
    answer = await send_at_the_end(tiny, uri, method)
    assert has_something(await asyncio.wait_for(answer, ANSWER_TIMEOUT))
