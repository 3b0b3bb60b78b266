"""JSON that is no well-formed JSON-RPC message gets the answer JSON-RPC 2.0 gives it: Invalid
Request (-32600), with the message's id where it has a usable one and null where it has none; a
notification's method sent with an id is Method Not Found (-32601)."""

from __future__ import annotations

from typing import Any

import pytest

from phi3_lsp.malformed_messages import refusal_of

NOTIFICATIONS = frozenset({"textDocument/didOpen", "initialized", "exit", "$/cancelRequest"})
STATUS = {"command": "phi3.status"}


def request(**fields: Any) -> dict[str, Any]:
    """An executeCommand request, with `fields` changed."""
    message = {"jsonrpc": "2.0", "id": 7, "method": "workspace/executeCommand", "params": STATUS}
    return {**message, **fields}


@pytest.mark.parametrize(
    "message",
    [
        request(),
        request(id="seven"),
        request(id=None),  # JSON-RPC allows it (and answers with null)
        {"jsonrpc": "2.0", "method": "initialized", "params": {}},
        {"jsonrpc": "2.0", "method": "phi3/custom"},  # a notification without params
        {"jsonrpc": "2.0", "id": "a1", "result": None},
        {"jsonrpc": "2.0", "id": "a1", "error": {"code": -32601, "message": "no"}},
        {"jsonrpc": "2.0", "id": "a1"},  # a response whose null result an encoder dropped
    ],
    ids=["request", "string id", "null id", "notification", "no params", "result", "error", "bare"],
)
def test_well_formed_messages_are_not_refused(message: Any) -> None:
    assert refusal_of(message, NOTIFICATIONS) is None


@pytest.mark.parametrize(
    ("message", "answer_id", "problem"),
    [
        (request(jsonrpc="1.0"), 7, '"jsonrpc" must be "2.0", not "1.0"'),
        (request(jsonrpc=2), 7, '"jsonrpc" must be "2.0", not 2'),
        ({"id": 7, "method": "shutdown"}, 7, '"jsonrpc" is missing'),
        (request(method=5), 7, '"method" must be a string, not 5'),
        (request(method=None), 7, '"method" must be a string, not null'),
        (request(id={"a": 1}), None, '"id" must be a string or an integer, not {"a": 1}'),
        (request(id=[1]), None, '"id" must be a string or an integer, not [1]'),
        (request(id=True), None, '"id" must be a string or an integer, not true'),
        (request(id=1.5), None, '"id" must be a string or an integer, not 1.5'),
        ({"jsonrpc": "2.0", "result": 1}, None, 'no "method" and no "id"'),
        ({"jsonrpc": "2.0", "id": [1], "method": 5}, None, '"method" must be a string'),
    ],
)
def test_a_malformed_message_is_an_invalid_request_answered_to_its_readable_id(
    message: dict[str, Any], answer_id: int | None, problem: str
) -> None:
    answer = refusal_of(message, NOTIFICATIONS)
    assert answer is not None
    assert (answer.id, answer.code) == (answer_id, -32600)
    assert answer.message.startswith("Invalid Request: ")
    assert problem in answer.message


def test_an_id_written_as_a_whole_float_is_the_integer() -> None:
    answer = refusal_of(request(id=7.0, method=5), NOTIFICATIONS)
    assert answer is not None and answer.id == 7


class ReadMessage:
    """What the reader makes of an object within a value before it sees the value."""


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (42, "a number"),
        ("text", "a string"),
        (None, "null"),
        (True, "true"),
        ([ReadMessage()], "an array"),  # a batch, whose message the reader read already
    ],
)
def test_json_that_is_no_object_is_an_invalid_request_with_a_null_id(value: Any, kind: str) -> None:
    answer = refusal_of(value, NOTIFICATIONS)
    assert answer is not None
    assert (answer.id, answer.code) == (None, -32600)
    assert answer.message.startswith(f"Invalid Request: a message is a JSON object, not {kind}")


def test_a_value_the_reader_made_a_message_of_is_still_quoted() -> None:
    answer = refusal_of(request(id={"inner": ReadMessage()}), NOTIFICATIONS)
    assert answer is not None and '"id" must be a string or an integer' in answer.message


def test_a_long_wrong_value_is_quoted_cut_short() -> None:
    answer = refusal_of(request(id={"key": "x" * 1000}), NOTIFICATIONS)
    assert answer is not None
    assert '{"key": "xxx' in answer.message and len(answer.message) < 200


@pytest.mark.parametrize("msg_id", [3, "three", None])
def test_a_notification_sent_with_an_id_is_a_method_not_found(msg_id: Any) -> None:
    message = {"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/didOpen", "params": {}}
    answer = refusal_of(message, NOTIFICATIONS)
    assert answer is not None
    assert (answer.id, answer.code) == (msg_id, -32601)
    assert answer.message == "textDocument/didOpen is a notification: it is sent without an id"


def test_a_method_unknown_as_a_notification_is_left_to_its_handler() -> None:
    message = {"jsonrpc": "2.0", "id": 3, "method": "phi3/readAtCursor", "params": {}}
    assert refusal_of(message, NOTIFICATIONS) is None
