"""The messages read once at start are those the server gets and sends while the user types."""

from __future__ import annotations

from lsprotocol import types

from phi3_lsp.protocol_warmup import INCOMING, OUTGOING, warm_up
from phi3_lsp.server import build_server


def test_each_sample_reads_as_the_message_of_its_method() -> None:
    server = build_server()
    warm_up(server.converter)  # reads and writes them all without a complaint
    for method, params in INCOMING.items():
        message = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
        if types.METHOD_TO_TYPES[method][1] is None:
            del message["id"]  # a notification
        read = server.protocol.structure_message(message)
        assert isinstance(read, types.METHOD_TO_TYPES[method][0]), method
        assert getattr(read, "method", None) == method


def test_every_message_the_server_handles_while_the_user_types_is_covered() -> None:
    server = build_server()
    handled = set(server.protocol.fm.features)
    while_typing = {method for method in handled if method.startswith("textDocument/")}
    assert while_typing, "the server handles document messages"
    assert while_typing <= set(INCOMING), while_typing - set(INCOMING)
    assert types.CANCEL_REQUEST in INCOMING  # pygls handles it itself
    requests = {m for m in while_typing if types.METHOD_TO_TYPES[m][1] is not None}
    assert requests == set(OUTGOING)
