"""`textDocument/inlineCompletion`: the continuation as ghost text at the cursor."""

from __future__ import annotations

from lsprotocol import types

from phi3_lsp.features.continuation import continuation_at, cursor_in
from phi3_lsp.features.documents import cursor_position
from phi3_lsp.selected_item import AppliedItem, apply_selected_item
from phi3_lsp.server import Phi3LanguageServer


def register(server: Phi3LanguageServer) -> None:
    """Add the inline completion handler to `server`."""

    # Registered with options: without them pygls does not advertise the capability.
    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: Phi3LanguageServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        uri = params.text_document.uri
        # The cursor as read now: a character past the line's end answers at the end.
        at = cursor_position(ls, uri, params.position)
        selected = params.context.selected_completion_info
        # Applied now, with the cursor read: to the text the request was made on.
        applied = None if selected is None else selected_item_applied(ls, uri, at, selected)
        text = await continuation_at(ls, uri, at, applied)
        if not text:
            return types.InlineCompletionList(items=[])
        if applied is not None and selected is not None:
            # The selected item extended, over its range: a client with its completion list
            # open shows no other suggestion.
            item = types.InlineCompletionItem(
                insert_text=selected.text + text, range=selected.range
            )
        else:
            # An empty range at the cursor: without it, VS Code replaces the word being typed.
            cursor = types.Range(start=at, end=at)
            item = types.InlineCompletionItem(insert_text=text, range=cursor)
        return types.InlineCompletionList(items=[item])


def selected_item_applied(
    ls: Phi3LanguageServer,
    uri: str,
    cursor: types.Position,
    selected: types.SelectedCompletionInfo,
) -> AppliedItem | None:
    """The text of `uri` with the completion list's selected item applied (see
    `apply_selected_item`); None when the document is not open, the cursor is past its end or
    the item cannot be applied there."""
    text = cursor_in(ls, uri, cursor)
    if text is None:
        return None
    lines, offset = text
    start, end = selected.range.start, selected.range.end
    return apply_selected_item(
        lines,
        offset,
        (start.line, start.character),
        (end.line, end.character),
        selected.text,
        ls.position_encoding,
    )
