"""Memory a user can see in their task manager: what long prompts took comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from bench.workload import rss_kib
from lsprotocol import types

from e2e.lsp_session import Phi3Client, start_smollm2, stop
from phi3_lsp import engine, generation, model_host

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# Prompts of ~1,500-2,500 tokens of real source: their keys and values take tens of MB each.
LONG_SOURCES = (generation, model_host, engine)
SETTINGS = {"maxNewTokens": 2, "answerBudgetMs": 0, "contextTokens": 2500}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(offline_pack: None, hf_home: Path) -> AsyncIterator[Phi3Client]:
    client = await start_smollm2(hf_home, SETTINGS)
    yield client
    await stop(client)


def resident_mib(client: Phi3Client) -> float:
    """The server process's resident memory (VmRSS), in MiB."""
    process = client._server  # pygls keeps the child process only here
    assert process is not None
    resident = rss_kib(process.pid)
    assert resident is not None
    return resident / 1024


async def complete_at_end(client: Phi3Client, uri: str, text: str) -> None:
    lines = text.split("\n")
    await client.inline(uri, len(lines) - 1, len(lines[-1]))


async def test_closing_documents_gives_their_prompts_memory_back(server: Phi3Client) -> None:
    # A first completion waits for the model thread's job after the load (fp32's 4-bit drafts),
    # which stays loaded: the memory before is measured with it.
    short = "def add(a, b):\n"
    await complete_at_end(server, server.open_text("first.py", short), short)
    before = resident_mib(server)
    uris = []
    for module in LONG_SOURCES:
        text = Path(str(module.__file__)).read_text(encoding="utf-8")
        uris.append(server.open_text(Path(str(module.__file__)).name, text))
        await complete_at_end(server, uris[-1], text)
    reading = resident_mib(server)
    for uri in uris:
        server.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )
    # The model thread frees a closed document's cache in turn: a completion queued after
    # the closes runs once they are done.
    await complete_at_end(server, server.open_text("short.py", short), short)
    after = resident_mib(server)
    held_for_prompts = reading - before
    assert held_for_prompts > 100, f"{held_for_prompts:.0f} MiB for three long prompts"
    # What is still held after the closes is a small part of what the prompts took.
    assert after - before < 0.25 * held_for_prompts, (before, reading, after)
