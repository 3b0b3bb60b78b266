"""Requests on a long, edited document read the part of it they need, not a copy of all of it.

A 50 MB file with an emoji a line is a 200 MB string: a copy of it takes ~0.1 s of the event
loop and 200 MB more memory. These documents take 12.8 MB; a request may allocate under 1 MB.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from lsprotocol import types

from phi3_lsp.completion import build_prompt, prompt_budget
from phi3_lsp.features.read_at_cursor import READ_AT_CURSOR
from phi3_lsp.model_host import ModelHost
from phi3_lsp.server import Phi3LanguageServer, build_server
from phi3_lsp.text_documents import IndexedWorkspace
from phi3_lsp.tokens import DocumentTokenizer

URI = "file:///long.py"
LINE = "    value = compute(item)  # 😀\n"
LINES = 100_000
ALLOCATED_AT_MOST = 1_000_000
MODEL_CONTEXT = 4096


@pytest.fixture(scope="module")
def phi3_tokenizer(phi3_mini_dir: Path) -> DocumentTokenizer:
    return DocumentTokenizer.from_dir(phi3_mini_dir)


def serve_long_document(host: Any) -> Phi3LanguageServer:
    """A server holding the long document, edited once, with `host` as its model host."""
    server = build_server()
    server.protocol._workspace = IndexedWorkspace(None, [], "utf-16")
    server.protocol.client_capabilities = types.ClientCapabilities()  # as `initialize` sets them
    server.host = cast(ModelHost, host)
    server.workspace.put_text_document(
        types.TextDocumentItem(uri=URI, language_id="python", version=1, text=LINE * LINES)
    )
    at = types.Position(line=LINES // 2, character=4)
    server.workspace.update_text_document(
        types.VersionedTextDocumentIdentifier(uri=URI, version=2),
        types.TextDocumentContentChangePartial(range=types.Range(start=at, end=at), text="x"),
    )
    return server


def handler(server: Phi3LanguageServer, method: str) -> Callable[[Any], Coroutine[Any, Any, Any]]:
    """The server's handler of `method`, which takes the request's params."""
    return cast(Callable[[Any], Coroutine[Any, Any, Any]], server.protocol.fm.features[method])


@contextmanager
def allocations() -> Iterator[list[int]]:
    """The most memory Python allocated at once inside the block, in bytes (as its one item)."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
        peak.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def test_a_hover_reads_the_text_around_its_word(phi3_tokenizer: DocumentTokenizer) -> None:
    server = serve_long_document(SimpleNamespace(tokenizer=phi3_tokenizer))
    hover = handler(server, types.TEXT_DOCUMENT_HOVER)
    params = types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=URI),
        position=types.Position(line=LINES // 2, character=6),
    )
    with allocations() as peak:
        answer = asyncio.run(hover(params))
    assert isinstance(answer, types.Hover) and isinstance(answer.contents, types.MarkupContent)
    assert answer.contents.value.startswith("`xvalue` — ")
    assert answer.range == types.Range(
        start=types.Position(line=LINES // 2, character=4),
        end=types.Position(line=LINES // 2, character=10),
    )
    assert peak[0] < ALLOCATED_AT_MOST


class PromptRecorder:
    """A model host that keeps the prompts it is asked to read or continue, and does neither."""

    def __init__(self, tokenizer: DocumentTokenizer) -> None:
        self.tokenizer = tokenizer
        self.context_length = MODEL_CONTEXT
        self.prompts: list[list[int]] = []

    def can_generate(self) -> bool:
        return True

    async def generate(self, prompt_ids: list[int], **_: Any) -> None:
        self.prompts.append(prompt_ids)
        return None  # as a generation stopped before it began

    async def read_prompt(self, prompt_ids: list[int], **_: Any) -> None:
        self.prompts.append(prompt_ids)
        return None


@pytest.mark.parametrize("method", [types.TEXT_DOCUMENT_INLINE_COMPLETION, READ_AT_CURSOR])
def test_a_completion_at_the_end_copies_what_its_prompt_reads(
    phi3_tokenizer: DocumentTokenizer, method: str
) -> None:
    host = PromptRecorder(phi3_tokenizer)
    server = serve_long_document(host)
    at_the_end = types.Position(line=LINES, character=0)
    document = types.TextDocumentIdentifier(uri=URI)
    params: Any = types.InlineCompletionParams(
        text_document=document,
        position=at_the_end,
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Automatic
        ),
    )
    if method == READ_AT_CURSOR:  # pygls hands it the message's JSON
        params = server.converter.unstructure(
            types.TextDocumentPositionParams(text_document=document, position=at_the_end)
        )
    with allocations() as peak:
        asyncio.run(handler(server, method)(params))
    # The prompt the whole text before the cursor gives.
    settings = server.settings
    budget = prompt_budget(settings.context_tokens, MODEL_CONTEXT, settings.max_new_tokens)
    text = server.workspace.get_text_document(URI).source
    assert host.prompts == [build_prompt(phi3_tokenizer, text, budget).ids]
    assert peak[0] < ALLOCATED_AT_MOST
