"""The protocol library's first meeting with each message of typing, paid before the user types.

lsprotocol's converter writes the code that reads or writes a message type the first time it
meets that type: 1.4-3.3 ms each on a 2-core CPU (a didChange 3.3 ms, hover params 1.4 ms, a
hover 1.6 ms). A server's first keystroke and first hover paid that on the event loop: the
first typing-through answered in 9.2 ms against ~3.4 ms for later ones. `warm_up` reads and
writes a sample of each message of typing and hovering once, while the model loads.
"""

from __future__ import annotations

from typing import Any

from cattrs import Converter
from lsprotocol import types

_POSITION = {"line": 0, "character": 0}
_RANGE = types.Range(start=types.Position(0, 0), end=types.Position(0, 0))
_DOCUMENT = {"uri": "file:///warm-up.txt"}

INCOMING: dict[str, dict[str, Any]] = {
    types.TEXT_DOCUMENT_DID_OPEN: {
        "textDocument": {**_DOCUMENT, "languageId": "plaintext", "version": 1, "text": "x"}
    },
    types.TEXT_DOCUMENT_DID_CHANGE: {
        "textDocument": {**_DOCUMENT, "version": 2},
        "contentChanges": [{"range": {"start": _POSITION, "end": _POSITION}, "text": "x"}],
    },
    types.TEXT_DOCUMENT_DID_CLOSE: {"textDocument": _DOCUMENT},
    types.TEXT_DOCUMENT_HOVER: {"textDocument": _DOCUMENT, "position": _POSITION},
    types.TEXT_DOCUMENT_INLINE_COMPLETION: {
        "textDocument": _DOCUMENT,
        "position": _POSITION,
        "context": {"triggerKind": types.InlineCompletionTriggerKind.Automatic.value},
    },
    types.TEXT_DOCUMENT_COMPLETION: {"textDocument": _DOCUMENT, "position": _POSITION},
    types.CANCEL_REQUEST: {"id": 1},
}
"""Params of the messages an editor sends while the user types and hovers, by method."""

OUTGOING: dict[str, object] = {
    types.TEXT_DOCUMENT_HOVER: types.Hover(
        contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value="x"), range=_RANGE
    ),
    types.TEXT_DOCUMENT_INLINE_COMPLETION: types.InlineCompletionList(
        items=[types.InlineCompletionItem(insert_text="x", range=_RANGE)]
    ),
    types.TEXT_DOCUMENT_COMPLETION: types.CompletionList(
        is_incomplete=True,
        items=[
            types.CompletionItem(
                label="x",
                kind=types.CompletionItemKind.Text,
                detail="x",
                documentation=types.MarkupContent(kind=types.MarkupKind.PlainText, value="x"),
                text_edit=types.TextEdit(range=_RANGE, new_text="x"),
            )
        ],
    ),
}
"""A result of the shape the handlers give, by method."""


def warm_up(converter: Converter) -> None:
    """Read each message of `INCOMING` and write each answer of `OUTGOING` once, as pygls does
    with `converter`."""
    for method, params in INCOMING.items():
        message_type, response_type = types.METHOD_TO_TYPES[method][:2]
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
        if response_type is not None:
            message["id"] = 0  # a request
        converter.structure(message, message_type)
    for method, result in OUTGOING.items():
        response_type = types.METHOD_TO_TYPES[method][1]
        assert response_type is not None, f"{method} is a request"
        converter.unstructure(response_type(id=0, result=result, jsonrpc="2.0"))
