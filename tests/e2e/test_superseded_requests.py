"""A keystroke lets the prompt chunk in flight finish for the newer request; what then stops
the newer request (a model switch, closing the document, a request elsewhere) stops that chunk
too, within a layer, instead of leaving the model thread to read it for no one."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from e2e.lsp_session import SMOLLM2_SETTINGS, Phi3Client, start_smollm2, stop
from phi3_lsp import generation as generation_module
from phi3_lsp.generation import PREFILL_CHUNK_TOKENS
from phi3_lsp.prompt_reading import SHOWN_EVERY_SECONDS

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# One thread: SmolLM2 reads a 512-token chunk in ~1.8 s here, so that progress reports (every
# 0.5 s) show where a chunk's pass is, and a stop lands well before the chunk's end.
SETTINGS = {**SMOLLM2_SETTINGS, "contextTokens": 4096, "threads": 1, "int4Drafts": False}
PHI3 = "microsoft/Phi-3-mini-4k-instruct"
READING = re.compile(r"([\d,]+) of ([\d,]+) tokens")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reader(offline_pack: None, hf_home: Path) -> AsyncIterator[Phi3Client]:
    client = await start_smollm2(hf_home, SETTINGS)
    yield client
    await stop(client)


@pytest.mark.parametrize("how", ["model switch", "close", "another document"])
async def test_what_stops_the_newer_request_stops_the_chunk_kept_for_it(
    reader: Phi3Client, how: str
) -> None:
    # ~4,000 tokens of real source: 7 full chunks, each read for seconds.
    package = Path(generation_module.__file__).parent
    text = "\n".join(path.read_text(encoding="utf-8") for path in sorted(package.glob("*.py")))
    uri = reader.open_text(f"long-{how}.py", text)
    earlier = set(reader.progress_reports)
    first = asyncio.ensure_future(reader.inline(uri, *end_of(text), msg_id=f"first-{how}"))
    token, chunk_end = await chunk_being_read(reader, earlier)
    # A keystroke, as VS Code sends it: the edit, the older request cancelled, a newer one.
    # The newer prompt begins with the chunk in flight, which runs to its end for it.
    text += "x"
    reader.replace_text(uri, text, version=2)
    reader.cancel_request(types.CancelParams(id=f"first-{how}"))
    second = asyncio.ensure_future(reader.inline(uri, *end_of(text)))
    await asyncio.sleep(0.1)  # its prompt is tokenized off the event loop, then it is queued
    elsewhere = None
    if how == "model switch":
        await reader.change_settings({**SETTINGS, "model": PHI3})
    elif how == "close":
        reader.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )
    else:
        other = reader.open_text("short.txt", "The capital of France is")
        elsewhere = asyncio.ensure_future(reader.inline(other, 0, 24))
    try:
        # Nothing needs the chunk now: its pass stops within a layer, well before its end.
        read = tokens_read(await reading_end(reader, token))
        assert read < chunk_end, f"the old prompt's chunk ran to its end: {read} tokens read"
        with pytest.raises(JsonRpcRequestCancelled):
            await first
        assert await second == []
        if elsewhere is not None:
            [item] = await elsewhere
            assert isinstance(item.insert_text, str) and item.insert_text.strip()
    finally:
        if how == "model switch":  # SmolLM2 again, for the tests that follow
            await smollm2_again(reader)


async def smollm2_again(client: Phi3Client) -> None:
    """Switch back to SmolLM2 from Phi-3 (loading or loaded) and wait until it is ready."""
    await client.wait_for_status(
        lambda status: status["model"] == PHI3 and status["state"] in ("ready", "error")
    )
    seen = len(client.statuses)
    await client.change_settings(SETTINGS)
    ready = await client.wait_for_status(
        lambda status: status["state"] in ("ready", "error"), after=seen
    )
    assert ready["model"] == "smollm2-135m" and ready["weightsLoaded"]


async def chunk_being_read(client: Phi3Client, earlier: set[Any]) -> tuple[Any, int]:
    """The token of the prompt reading that began after `earlier`, and the end of a chunk (in
    tokens read) whose pass it has been seen in, in the first half of it: more than a second
    of that pass is left."""

    def early_in_a_chunk(token: Any, report: Any) -> bool:
        if isinstance(report, types.WorkDoneProgressEnd):
            return True  # too late: read whole
        if not isinstance(report, types.WorkDoneProgressReport) or report.message is None:
            return False
        read, total = tokens_in(report.message)
        chunk_end = (read // PREFILL_CHUNK_TOKENS + 1) * PREFILL_CHUNK_TOKENS
        # The prompt's last chunk does not end at a whole chunk: not one a keystroke keeps.
        return read % PREFILL_CHUNK_TOKENS < PREFILL_CHUNK_TOKENS / 2 and chunk_end < total

    token, report = await client.wait_for_progress(early_in_a_chunk, skip=earlier)
    assert isinstance(report, types.WorkDoneProgressReport), (
        f"the prompt was read before a report every {SHOWN_EVERY_SECONDS} s found its pass "
        "early in a chunk: this machine reads too fast for this test"
    )
    assert report.message is not None
    read, _ = tokens_in(report.message)
    return token, (read // PREFILL_CHUNK_TOKENS + 1) * PREFILL_CHUNK_TOKENS


async def reading_end(client: Phi3Client, token: Any) -> str:
    """The message that ends the prompt reading under `token`."""
    _, end = await client.wait_for_progress(
        lambda other, report: other == token and isinstance(report, types.WorkDoneProgressEnd)
    )
    assert end.message is not None
    return str(end.message)


def tokens_in(message: str) -> tuple[int, int]:
    """The tokens read and to read that a prompt reading's message says."""
    found = READING.fullmatch(message)
    assert found is not None, message
    read, total = found.groups()
    return int(read.replace(",", "")), int(total.replace(",", ""))


def tokens_read(message: str) -> int:
    return tokens_in(message)[0]


def end_of(text: str) -> tuple[int, int]:
    """The line and character (UTF-16, ASCII here) at the end of `text`."""
    return text.count("\n"), len(text.split("\n")[-1])
