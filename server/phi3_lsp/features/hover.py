"""`textDocument/hover`: the tokens under the cursor, as the model reads the document.

The tokenizer alone answers (never the model), so hovers work while weights load and while a
completion runs. A word's tokens depend on what surrounds it (a leading space, a merge across
punctuation), so they come from the lines around it, checked against a wider window, and from
the whole document (tokenized once per version) only when the two disagree. That takes ~0.6 s
on 10,000 lines, so it runs on a worker thread: other messages are handled meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TypeVar

from lsprotocol import types

from phi3_lsp.features.documents import open_document
from phi3_lsp.positions import LineIndex
from phi3_lsp.server import Phi3LanguageServer
from phi3_lsp.tokens import DocumentTokenizer, TokenSpan, Word, tokens_covering, word_at
from phi3_lsp.word_tokens import tokens_near

_CACHED_DOCUMENTS = 8
_T = TypeVar("_T")


class _VersionCache(OrderedDict[tuple[str, int | None], _T]):
    """What was computed for the last few document versions."""

    def recent(self, key: tuple[str, int | None]) -> _T | None:
        """The value kept for `key` (now the most recent), or None."""
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key]

    def keep(self, key: tuple[str, int | None], value: _T) -> None:
        self[key] = value
        while len(self) > _CACHED_DOCUMENTS:
            self.popitem(last=False)


class DocumentTokens:
    """Whole-document tokens of recent document versions (made only when needed)."""

    def __init__(self) -> None:
        self._tokenizer: DocumentTokenizer | None = None
        self._spans: _VersionCache[list[TokenSpan]] = _VersionCache()

    async def covering(
        self,
        tokenizer: DocumentTokenizer,
        uri: str,
        version: int | None,
        lines: LineIndex,
        word: Word,
    ) -> list[TokenSpan]:
        """The tokens that cover `word` in the document (`lines.text`) as a whole tokenizes."""
        if tokenizer is not self._tokenizer:
            self._spans.clear()  # a new model: every document tokenizes differently
            self._tokenizer = tokenizer
        near = tokens_near(tokenizer, lines.text, lines.starts, word.start, word.end)
        if near is not None:
            return near
        key = (uri, version)
        spans = self._spans.recent(key)
        if spans is None:
            spans = await asyncio.to_thread(tokenizer.token_spans, lines.text)
            if tokenizer is self._tokenizer:  # not a model's that was replaced meanwhile
                self._spans.keep(key, spans)
        return tokens_covering(spans, word.start, word.end)


def register(server: Phi3LanguageServer) -> None:
    """Add the hover handler to `server`."""
    cache = DocumentTokens()

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: Phi3LanguageServer, params: types.HoverParams) -> types.Hover | None:
        tokenizer = ls.host.tokenizer if ls.host is not None else None
        document = open_document(ls, params.text_document.uri)
        if tokenizer is None or document is None:
            return None
        lines = document.line_index
        position = params.position
        offset = lines.offset_at(position.line, position.character, ls.position_encoding)
        word = word_at(lines.text, offset) if offset is not None else None
        if word is None:
            return None
        covering = await cache.covering(tokenizer, document.uri, document.version, lines, word)
        if not covering:
            return None
        start = lines.position_at(word.start, ls.position_encoding)
        end = lines.position_at(word.end, ls.position_encoding)
        return types.Hover(
            contents=types.MarkupContent(
                kind=types.MarkupKind.Markdown, value=token_table(word, covering, lines.text)
            ),
            range=types.Range(
                start=types.Position(line=start[0], character=start[1]),
                end=types.Position(line=end[0], character=end[1]),
            ),
        )


def token_table(word: Word, spans: list[TokenSpan], text: str) -> str:
    """Markdown: the word, then one `text | piece | id` row per token.

    `text` is what the token covers in the document, spaces shown as "␣"; `piece` is the
    vocabulary entry itself (e.g. "▁capital" or "Ġcapital", whose first character marks a space).
    """
    count = f"{len(spans)} token" + ("" if len(spans) == 1 else "s")
    rows = "\n".join(
        f"| {_code(text[span.start : span.end].replace(' ', '␣'))} | {_code(span.piece)} "
        f"| {span.id} |"
        for span in spans
    )
    header = "| text | piece | id |\n|---|---|---:|"
    return f"{_code(word.text)} — {count}\n\n{header}\n{rows}\n"


def _code(text: str) -> str:
    """`text` as inline code that survives Markdown tables (pipes, backticks, newlines)."""
    visible = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    visible = visible.replace("|", "\\|")
    fence = "``" if "`" in visible else "`"
    return f"{fence} {visible} {fence}" if fence == "``" else f"`{visible}`"
