"""`textDocument/completion`: the continuation as one classic completion item."""

from __future__ import annotations

from lsprotocol import types

from phi3_lsp.features.continuation import continuation_at
from phi3_lsp.features.documents import cursor_position, word_before_cursor
from phi3_lsp.server import Phi3LanguageServer

_LABEL_LENGTH = 40


def register(server: Phi3LanguageServer) -> None:
    """Add the completion handler to `server`."""

    @server.feature(types.TEXT_DOCUMENT_COMPLETION)
    async def completion(
        ls: Phi3LanguageServer, params: types.CompletionParams
    ) -> types.CompletionList:
        uri = params.text_document.uri
        # The cursor as read now: a character past the line's end answers at the end.
        at = cursor_position(ls, uri, params.position)
        typed, word_start = word_before_cursor(ls, uri, at)
        text = await continuation_at(ls, uri, at)
        # Incomplete: the next keystroke asks again rather than filtering a stale item.
        if not text:
            return types.CompletionList(is_incomplete=True, items=[])
        # The edit retypes the word before the cursor, then the continuation: the text it makes
        # is the same as an insertion at the cursor, and every client's filter passes.
        # Neovim's omnifunc keeps only items whose new text begins with that word; Helix
        # matches the word against filterText (else the label); VS Code matches the text the
        # range covers before the cursor against filterText (else the label).
        retyped = typed + text
        item = types.CompletionItem(
            label=completion_label(text),
            kind=types.CompletionItemKind.Text,
            detail="phi3-lsp continuation",
            documentation=types.MarkupContent(kind=types.MarkupKind.PlainText, value=text),
            filter_text=retyped,
            text_edit=types.TextEdit(range=types.Range(start=word_start, end=at), new_text=retyped),
        )
        return types.CompletionList(is_incomplete=True, items=[item])


def completion_label(text: str) -> str:
    """The first non-empty line of `text`, shortened to fit a completion menu."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(line) <= _LABEL_LENGTH:
        return line
    return line[: _LABEL_LENGTH - 1].rstrip() + "…"
