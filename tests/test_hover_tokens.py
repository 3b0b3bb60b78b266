"""Hover tokens of a word whose nearby lines do not settle them: the whole document decides."""

from __future__ import annotations

import asyncio

from tokenizers import Tokenizer
from tokenizers.models import BPE

from phi3_lsp.document_tokens import DocumentTokens
from phi3_lsp.positions import LineIndex
from phi3_lsp.tokens import DocumentTokenizer, TokenSpan, tokens_covering, word_at
from phi3_lsp.word_tokens import tokens_near

LINE = "x\n"


def line_merging_tokenizer() -> DocumentTokenizer:
    """A real BPE tokenizer whose merges join 1, 2, 4 and then 8 whole lines, from the start of
    the text: which lines a line's token spans depends on text far above it."""
    pieces = ["x", "\n"] + [LINE * count for count in (1, 2, 4, 8)]
    merges = [("x", "\n")] + [(LINE * count, LINE * count) for count in (1, 2, 4)]
    vocab = {piece: index for index, piece in enumerate(pieces)}
    return DocumentTokenizer(Tokenizer(BPE(vocab, merges)))


def test_a_word_the_windows_disagree_on_gets_the_whole_documents_tokens() -> None:
    tokenizer = line_merging_tokenizer()
    lines = LineIndex(LINE * 40)
    word = word_at(lines.text, lines.starts[20])
    assert word is not None and word.text == "x"
    # 5 lines around it make a token of 4 lines, 13 lines one of 8: they disagree.
    assert tokens_near(tokenizer, lines.text, lines.starts, word.start, word.end) is None

    async def hover_while_another_request_waits() -> tuple[list[TokenSpan], list[str]]:
        handled: list[str] = []

        async def another_request() -> None:
            handled.append("another request")

        waiting = asyncio.create_task(another_request())
        covering = await DocumentTokens().covering(tokenizer, lines, word)
        handled.append("hover")
        await waiting
        return covering, handled

    covering, handled = asyncio.run(hover_while_another_request_waits())
    whole = tokens_covering(tokenizer.token_spans(lines.text), word.start, word.end)
    assert covering == whole
    # From the top, lines 16-23 make one token of 8 lines.
    assert [(span.start, span.end) for span in covering] == [(16 * 2, 24 * 2)]
    # The document was tokenized off the event loop: the other request did not wait for it.
    assert handled == ["another request", "hover"]
