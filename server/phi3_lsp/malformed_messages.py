"""JSON-RPC's answer to a message that is JSON but no well-formed request, notification or
response.

pygls answered such messages with nothing (a `"jsonrpc"` other than `"2.0"`, a notification's
method sent with an id), or with an internal error and a traceback (a method or an id of another
JSON type), so the client waited for an answer that never came, or showed one that only a
developer of the server could read. JSON-RPC 2.0 answers each with Invalid Request, its id where
it has a usable one, else null ("If there was an error in detecting the id ... it MUST be Null").

A notification's method sent with an id is a request for a method the server does not have as
one: Method Not Found, as vscode-jsonrpc answers it, and the notification is not handled (an
`exit` with an id does not end the process).

Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass

INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
_SHOWN_VALUE = 60
"""Characters of a wrong value that the answer quotes."""
_MISSING = object()


@dataclass(frozen=True)
class Refusal:
    """The error response a malformed message gets."""

    id: int | str | None
    """The message's own id where it has a usable one, else JSON-RPC's null."""
    code: int
    message: str


def refusal_of(message: object, notification_methods: Container[str]) -> Refusal | None:
    """The answer to `message` (a JSON value as read) when it is no well-formed JSON-RPC message,
    or to a method of `notification_methods` sent with an id; None for any other message.

    A message with an id and no method is a response, left to its reader (LSP types its result
    as optional: some encoders drop a null one).
    """
    if not isinstance(message, dict):
        text = f"Invalid Request: a message is a JSON object, not {_json_kind(message)}"
        return Refusal(None, INVALID_REQUEST, text)
    msg_id = _usable_id(message.get("id"))
    problem = _problem(message)
    if problem is not None:
        return Refusal(msg_id, INVALID_REQUEST, f"Invalid Request: {problem}")
    method = message.get("method")
    if "id" in message and method in notification_methods:
        text = f"{method} is a notification: it is sent without an id"
        return Refusal(msg_id, METHOD_NOT_FOUND, text)
    return None


def _usable_id(value: object) -> int | str | None:
    """`value` if it can be a request's id (a string or an integer), else None."""
    if isinstance(value, float) and value.is_integer():
        return int(value)  # as JSON encoders may write an integer
    if isinstance(value, int | str) and not isinstance(value, bool):
        return value
    return None


def _problem(message: dict[str, object]) -> str | None:
    """What makes `message` no JSON-RPC 2.0 message, if anything."""
    version = message.get("jsonrpc", _MISSING)
    if version is _MISSING:
        return '"jsonrpc" is missing: it must be "2.0"'
    if version != "2.0":
        return f'"jsonrpc" must be "2.0", not {_shown(version)}'
    if "method" in message and not isinstance(message["method"], str):
        return f'"method" must be a string, not {_shown(message["method"])}'
    msg_id = message.get("id")
    if msg_id is not None and _usable_id(msg_id) is None:
        return f'"id" must be a string or an integer, not {_shown(msg_id)}'
    if "method" not in message and "id" not in message:
        return 'no "method" and no "id": neither a request, a notification nor a response'
    return None


def _json_kind(value: object) -> str:
    """What JSON calls the kind of `value`, read from a message that is no object."""
    if isinstance(value, list):
        return "an array (LSP sends no batches)"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a string" if isinstance(value, str) else "a number"


def _shown(value: object) -> str:
    """`value` in JSON, cut short where it is long."""
    # `str` for what the reader made a message of: an object with "jsonrpc" inside the value.
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _SHOWN_VALUE else text[: _SHOWN_VALUE - 1] + "…"
