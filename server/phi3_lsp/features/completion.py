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
        typed = word_before_cursor(ls, uri, at)
        text = await continuation_at(ls, uri, at)
        # Incomplete: the next keystroke asks again rather than filtering a stale item.
        if not text:
            return types.CompletionList(is_incomplete=True, items=[])
        cursor = types.Range(start=at, end=at)
        item = types.CompletionItem(
            label=completion_label(text),
            kind=types.CompletionItemKind.Text,
            detail="phi3-lsp continuation",
            documentation=types.MarkupContent(kind=types.MarkupKind.PlainText, value=text),
            # Helix (helix-term's completion menu) matches items against the word before the
            # cursor, not against the edit's range (empty, at the cursor): an item whose text
            # does not begin with that word would not show.
            filter_text=typed + text,
            text_edit=types.TextEdit(range=cursor, new_text=text),
        )
        return types.CompletionList(is_incomplete=True, items=[item])


def completion_label(text: str) -> str:
    """The first non-empty line of `text`, shortened to fit a completion menu."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(line) <= _LABEL_LENGTH:
        return line
    return line[: _LABEL_LENGTH - 1].rstrip() + "…"
