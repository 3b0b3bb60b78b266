"""The tokens that cover a word as the whole document tokenizes them, for hovers.

A word's tokens depend on what surrounds it (a leading space, a merge across punctuation), so
they come from the text around it, checked against a wider window (`word_tokens`), and from the
whole document (tokenized once per text) only when the two disagree. That takes ~0.6 s on
10,000 lines, so it runs on a worker thread: the event loop handles other messages meanwhile.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict

from phi3_lsp.positions import LineIndex
from phi3_lsp.tokens import DocumentTokenizer, TokenSpan, Word, tokens_covering
from phi3_lsp.word_tokens import tokens_near

_CACHED_TEXTS = 8


class DocumentTokens:
    """Whole-document tokens of the last few texts hovered (made only when needed).

    Kept by the text's `LineIndex` (one per document version: every edit and every open makes
    another), not by uri and version: a document closed and opened again, or an untitled one
    made anew, starts again at version 1 with another text.
    """

    def __init__(self) -> None:
        self._tokenizer: DocumentTokenizer | None = None
        # id(lines) → (lines, while it lives, its spans): an id is reused once its object dies.
        self._spans: OrderedDict[int, tuple[weakref.ref[LineIndex], list[TokenSpan]]] = (
            OrderedDict()
        )

    async def covering(
        self, tokenizer: DocumentTokenizer, lines: LineIndex, word: Word
    ) -> list[TokenSpan]:
        """The tokens that cover `word` in the document (`lines.text`) as a whole tokenizes."""
        if tokenizer is not self._tokenizer:
            self._spans.clear()  # a new model: every document tokenizes differently
            self._tokenizer = tokenizer
        near = tokens_near(tokenizer, lines.blocks, lines.starts, word.start, word.end)
        if near is not None:
            return near
        spans = self._kept_spans(lines)
        if spans is None:
            # Joined there too: the whole text of a long document takes a while to copy.
            spans = await asyncio.to_thread(lambda: tokenizer.token_spans(lines.text))
            if tokenizer is self._tokenizer:  # not a model's that was replaced meanwhile
                self._keep(lines, spans)
        return tokens_covering(spans, word.start, word.end)

    def _kept_spans(self, lines: LineIndex) -> list[TokenSpan] | None:
        kept = self._spans.get(id(lines))
        if kept is None or kept[0]() is not lines:
            return None
        self._spans.move_to_end(id(lines))
        return kept[1]

    def _keep(self, lines: LineIndex, spans: list[TokenSpan]) -> None:
        self._spans[id(lines)] = (weakref.ref(lines), spans)
        self._spans.move_to_end(id(lines))
        while len(self._spans) > _CACHED_TEXTS:
            self._spans.popitem(last=False)
