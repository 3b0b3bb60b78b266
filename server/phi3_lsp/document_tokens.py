"""The tokens that cover a word as the whole document tokenizes them, for hovers.

A word's tokens depend on what surrounds it (a leading space, a merge across punctuation), so
they come from the text around it, checked against a wider window (`word_tokens`), and from the
whole document (tokenized once per version) only when the two disagree. That takes ~0.6 s on
10,000 lines, so it runs on a worker thread: the event loop handles other messages meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TypeVar

from phi3_lsp.positions import LineIndex
from phi3_lsp.tokens import DocumentTokenizer, TokenSpan, Word, tokens_covering
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
        near = tokens_near(tokenizer, lines.blocks, lines.starts, word.start, word.end)
        if near is not None:
            return near
        key = (uri, version)
        spans = self._spans.recent(key)
        if spans is None:
            # Joined there too: the whole text of a long document takes a while to copy.
            spans = await asyncio.to_thread(lambda: tokenizer.token_spans(lines.text))
            if tokenizer is self._tokenizer:  # not a model's that was replaced meanwhile
                self._spans.keep(key, spans)
        return tokens_covering(spans, word.start, word.end)
