"""`textDocument/hover`: the tokens under the cursor, as the model reads the document.

The tokenizer alone answers (never the model), so hovers work while weights load and while a
completion runs. The document is tokenized whole, once per version: a word's tokens depend on
what precedes it (a leading space, a merge across punctuation).
"""

from __future__ import annotations

from collections import OrderedDict

from lsprotocol import types

from phi3_lsp.features.documents import cursor_offset, lsp_position, open_document
from phi3_lsp.server import Phi3LanguageServer
from phi3_lsp.tokens import DocumentTokenizer, TokenSpan, Word, tokens_covering, word_at

_CACHED_DOCUMENTS = 8


class DocumentTokens:
    """Token spans of the last few document versions, for the current tokenizer."""

    def __init__(self, size: int = _CACHED_DOCUMENTS) -> None:
        self._size = size
        self._tokenizer: DocumentTokenizer | None = None
        self._spans: OrderedDict[tuple[str, int | None], list[TokenSpan]] = OrderedDict()

    def spans(
        self, tokenizer: DocumentTokenizer, uri: str, version: int | None, text: str
    ) -> list[TokenSpan]:
        """The spans of `text` (document `uri` at `version`), tokenized once per tokenizer."""
        if tokenizer is not self._tokenizer:
            self._spans.clear()  # a new model: every document tokenizes differently
            self._tokenizer = tokenizer
        key = (uri, version)
        if key in self._spans:
            self._spans.move_to_end(key)
            return self._spans[key]
        spans = tokenizer.token_spans(text)
        self._spans[key] = spans
        while len(self._spans) > self._size:
            self._spans.popitem(last=False)
        return spans


def register(server: Phi3LanguageServer) -> None:
    """Add the hover handler to `server`."""
    cache = DocumentTokens()

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: Phi3LanguageServer, params: types.HoverParams) -> types.Hover | None:
        tokenizer = ls.host.tokenizer if ls.host is not None else None
        document = open_document(ls, params.text_document.uri)
        if tokenizer is None or document is None:
            return None
        text = document.source
        offset = cursor_offset(ls, document, params.position)
        word = word_at(text, offset) if offset is not None else None
        if word is None:
            return None
        spans = cache.spans(tokenizer, document.uri, document.version, text)
        covering = tokens_covering(spans, word.start, word.end)
        if not covering:
            return None
        return types.Hover(
            contents=types.MarkupContent(
                kind=types.MarkupKind.Markdown, value=token_table(word, covering, text)
            ),
            range=types.Range(
                start=lsp_position(ls, text, word.start), end=lsp_position(ls, text, word.end)
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
