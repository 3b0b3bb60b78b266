"""`textDocument/hover`: the tokens under the cursor, as the model reads the document.

The tokenizer alone answers (never the model), so hovers work while weights load and while a
completion runs. A hover asked after a settings change uses the model that change chose. It is
Markdown, or plain text for a client that prefers it (Emacs' eglot without markdown-mode offers
only plain text).
"""

from __future__ import annotations

from lsprotocol import types

from phi3_lsp.document_tokens import DocumentTokens
from phi3_lsp.features.documents import open_document
from phi3_lsp.server import Phi3LanguageServer
from phi3_lsp.token_table import token_columns, token_table
from phi3_lsp.tokens import word_at


def register(server: Phi3LanguageServer) -> None:
    """Add the hover handler to `server`."""
    cache = DocumentTokens()

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    async def hover(ls: Phi3LanguageServer, params: types.HoverParams) -> types.Hover | None:
        document = open_document(ls, params.text_document.uri)
        if document is None:
            return None
        lines = document.line_index  # the text the request was made on: read before any wait
        # The tokenizer of the model the last settings change chose: a hover asked while the
        # server still pulls them waits for them (none is pending in the common case).
        await ls.settled_settings()
        tokenizer = ls.host.tokenizer if ls.host is not None else None
        if tokenizer is None:
            return None
        position = params.position
        offset = lines.offset_at(position.line, position.character, ls.position_encoding)
        # The blocks, not `lines.text`: joining a 50 MB document after each edit took 0.25 s.
        word = word_at(lines.blocks, offset) if offset is not None else None
        if word is None:
            return None
        covering = await cache.covering(tokenizer, lines, word)
        if not covering or open_document(ls, params.text_document.uri) is not document:
            return None  # or closed while this waited: answered as a document not open
        start = lines.position_at(word.start, ls.position_encoding)
        end = lines.position_at(word.end, ls.position_encoding)
        kind = hover_format(ls.client_capabilities)
        render = token_table if kind == types.MarkupKind.Markdown else token_columns
        return types.Hover(
            contents=types.MarkupContent(kind=kind, value=render(word, covering, lines.blocks)),
            range=types.Range(
                start=types.Position(line=start[0], character=start[1]),
                end=types.Position(line=end[0], character=end[1]),
            ),
        )


def hover_format(capabilities: types.ClientCapabilities) -> types.MarkupKind:
    """The client's first choice of hover format (its list is in order of preference);
    Markdown when it names none."""
    hover = capabilities.text_document.hover if capabilities.text_document else None
    formats = (hover.content_format if hover else None) or ()
    known = (types.MarkupKind.Markdown, types.MarkupKind.PlainText)
    return next((types.MarkupKind(kind) for kind in formats if kind in known), known[0])
