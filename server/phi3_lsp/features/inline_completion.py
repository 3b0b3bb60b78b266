"""`textDocument/inlineCompletion`: the continuation as ghost text at the cursor."""

from __future__ import annotations

from lsprotocol import types

from phi3_lsp.features.continuation import continuation_at
from phi3_lsp.features.documents import cursor_position
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
        text = await continuation_at(ls, uri, at)
        if not text:
            return types.InlineCompletionList(items=[])
        # An empty range at the cursor: without it, VS Code replaces the word being typed.
        cursor = types.Range(start=at, end=at)
        return types.InlineCompletionList(
            items=[types.InlineCompletionItem(insert_text=text, range=cursor)]
        )
