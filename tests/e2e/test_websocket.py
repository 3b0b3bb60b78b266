"""`phi3-lsp --ws HOST:PORT`: the same server over WebSocket, for editors in a browser."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
import websockets

from e2e.lsp_session import ANSWER_TIMEOUT, LOAD_TIMEOUT, free_port

pytestmark = [pytest.mark.slow]


async def answer(connection: Any, msg_id: int) -> dict[str, Any]:
    """The response to request `msg_id`, skipping the notifications before it."""
    while True:
        message = json.loads(await connection.recv())
        if message.get("id") == msg_id:
            result: dict[str, Any] = message["result"]
            return result


async def session(port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Initialize, open a document, and hover a word once the tokenizer is there."""
    for _ in range(600):  # the server listens once its libraries are imported
        try:
            connection = await websockets.connect(f"ws://127.0.0.1:{port}")
            break
        except OSError:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("the server never listened")
    async with connection:
        request = {"jsonrpc": "2.0", "id": 1, "method": "initialize"}
        await connection.send(json.dumps({**request, "params": {"capabilities": {}}}))
        initialized = await asyncio.wait_for(answer(connection, 1), ANSWER_TIMEOUT)
        await connection.send(json.dumps({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        document = {"uri": "untitled:ws.txt", "languageId": "plaintext", "version": 1}
        await connection.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "textDocument/didOpen",
                    "params": {"textDocument": {**document, "text": "The capital of France is"}},
                }
            )
        )
        hover: dict[str, Any] | None = None
        for msg_id in range(2, 600):  # null until the tokenizer has loaded
            position = {"line": 0, "character": 6}
            params = {"textDocument": {"uri": document["uri"]}, "position": position}
            hover_request = {"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/hover"}
            await connection.send(json.dumps({**hover_request, "params": params}))
            hover = await asyncio.wait_for(answer(connection, msg_id), ANSWER_TIMEOUT)
            if hover is not None:
                break
            await asyncio.sleep(0.1)
        assert hover is not None
        return initialized, hover


def test_the_server_speaks_lsp_over_websocket(offline_pack: None) -> None:
    port = free_port()
    command = [sys.executable, "-m", "phi3_lsp", "--model", "smollm2-135m", "--ws"]
    server = subprocess.Popen([*command, f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    try:
        initialized, hover = asyncio.run(asyncio.wait_for(session(port), LOAD_TIMEOUT))
    finally:
        server.terminate()
        server.wait(30)
    assert "inlineCompletionProvider" in initialized["capabilities"]
    assert "Ġcapital" in hover["contents"]["value"]
