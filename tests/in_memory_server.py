"""A server handed messages in this process, as its reader would, writing to a buffer."""

from __future__ import annotations

import io
import json
from typing import Any, cast

from lsprotocol import types

from phi3_lsp.message_frames import read_message
from phi3_lsp.message_writer import MessageWriter
from phi3_lsp.request_rules import RequestRulesProtocol
from phi3_lsp.server import Phi3LanguageServer, build_server
from phi3_lsp.text_documents import IndexedWorkspace


def serve_in_memory(
    capabilities: types.ClientCapabilities | None = None,
) -> tuple[Phi3LanguageServer, io.BytesIO]:
    """An initialized server (no model host) that writes its messages to the returned buffer."""
    server = build_server()
    server.protocol._workspace = IndexedWorkspace(None, [], "utf-16")
    # As `initialize` sets them.
    server.protocol.client_capabilities = capabilities or types.ClientCapabilities()
    cast(RequestRulesProtocol, server.protocol)._initialize_seen = True
    sent = io.BytesIO()
    server.protocol.set_writer(MessageWriter(sent))
    return server, sent


def receive(
    server: Phi3LanguageServer, method: str, params: Any, msg_id: int | None = None
) -> None:
    """Hand the server one message from the client, as its reader does."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if msg_id is not None:
        message["id"] = msg_id
    server.protocol.handle_message(server.protocol.structure_message(message))


def answer(server: Phi3LanguageServer, msg_id: int | str, result: Any) -> None:
    """Hand the server the client's answer to its request `msg_id`."""
    message = {"jsonrpc": "2.0", "id": msg_id, "result": result}
    server.protocol.handle_message(server.protocol.structure_message(message))


def sent_messages(sent: io.BytesIO) -> list[dict[str, Any]]:
    """Every message the server wrote, in order."""
    stream = io.BytesIO(sent.getvalue())
    messages = []
    while framed := read_message(stream):
        messages.append(json.loads(framed.partition(b"\r\n\r\n")[2]))
    return messages


def answers(sent: io.BytesIO) -> dict[int, dict[str, Any]]:
    """The responses the server wrote, by request id."""
    return {message["id"]: message for message in sent_messages(sent) if "method" not in message}
