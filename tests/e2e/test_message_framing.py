"""Messages whose framing is broken, written to the server byte for byte (on its stdin, and over
TCP): each is dropped with a line in the log (or answered, where JSON-RPC asks), and the server
goes on serving the messages after it. Before, a header block without a usable Content-Length
left it deaf for the rest of the session."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from e2e.lsp_session import (
    ANSWER_TIMEOUT,
    Phi3Client,
    hover_text,
    start,
    start_over_tcp,
    stop,
    vscode_capabilities,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMPT = "The capital of France is"
URI = "untitled:framing.txt"
FRANCE_TOKEN = "| 3444 |"
"""How the hover over "France" shows its Phi-3 token id."""


def hover_request(msg_id: str) -> bytes:
    """The body of a hover request over "France", as a client would write it."""
    position = {"line": 0, "character": PROMPT.index("France")}
    params = {"textDocument": {"uri": URI}, "position": position}
    request = {"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/hover", "params": params}
    return json.dumps(request).encode()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["stdio", "tcp"])
async def server(
    offline_pack: None, hf_home: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Phi3Client]:
    """A server with Phi-3's tokenizer and one document open, shared by the module's tests of
    one transport."""
    begin = start_over_tcp if request.param == "tcp" else start
    client = await begin(None, hf_home, vscode_capabilities())
    await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    client.open_text("framing.txt", PROMPT)
    yield client
    await stop(client)


def write_raw(client: Phi3Client, data: bytes) -> None:
    """`data` to the server as it is, in order with what the client sends."""
    writer = client.protocol.writer
    assert writer is not None
    writer.write(data)


def expect_answer(client: Phi3Client, msg_id: str | None) -> asyncio.Future[Any]:
    """The answer to a request sent by hand with `msg_id` (None: an answer with a null id)."""
    answer: concurrent.futures.Future[Any] = concurrent.futures.Future()
    client.protocol._request_futures[msg_id] = answer  # type: ignore[index]
    return asyncio.wrap_future(answer)


async def assert_serving(client: Phi3Client) -> None:
    """The next request is read and answered."""
    hover = await client.hover_at(URI, 0, PROMPT.index("France"))
    assert FRANCE_TOKEN in hover_text(hover)


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        (b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n", b"", "is missing"),
        (b"Content-Lenght: %d\r\n", b"", "is missing"),
        (b"Content-Length: ten\r\n", b"", "is not a number of bytes"),
        (b"Content-Length: -%d\r\n", b"", "is not a number of bytes"),
        (b"Content-Length: 1" + b"0" * 30 + b"\r\n", b"", "is over 1 GiB"),
        (b"Content-Type: application/json\r\n", b"{\n\n}", "is missing"),
    ],
    ids=["no length", "misspelt", "a word", "negative", "beyond memory", "lines in the body"],
)
async def test_a_message_without_a_usable_length_is_dropped_and_the_next_is_answered(
    server: Phi3Client, headers: bytes, body: bytes, problem: str
) -> None:
    dropped = body or hover_request("dropped")
    logged = len(server.log_messages)
    write_raw(server, headers.replace(b"%d", b"%d" % len(dropped)) + b"\r\n" + dropped)
    await assert_serving(server)
    lines = [m for m in server.log_messages[logged:] if "A message was dropped" in m.message]
    assert lines, "the drop is said in the client's log"
    assert all(line.type == types.MessageType.Warning for line in lines)
    assert f"its Content-Length {problem}" in lines[0].message


@pytest.mark.parametrize(
    "headers",
    [
        b"content-length: %d\r\n\r\n",
        b"Content-Length:%d\r\n\r\n",
        b"Content-Length: %d\n\n",
        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length: %d\r\n\r\n",
    ],
    ids=["lower case", "no space", "line feeds only", "length last"],
)
async def test_headers_as_other_clients_write_them_are_read(
    server: Phi3Client, headers: bytes
) -> None:
    # HTTP's header names are case-insensitive (vscode-jsonrpc reads them so); pygls' own loop
    # took only "Content-Length: N\r\n" and missed every message after one written otherwise.
    request = hover_request("other-form")
    answer = expect_answer(server, "other-form")
    write_raw(server, headers % len(request) + request)
    assert FRANCE_TOKEN in json.dumps(await asyncio.wait_for(answer, ANSWER_TIMEOUT))
    await assert_serving(server)


async def test_a_length_past_the_body_costs_the_messages_it_covers_then_reading_goes_on(
    server: Phi3Client,
) -> None:
    # A length too long cannot be told from a body still on its way: the server reads that many
    # bytes, answers them with a parse error, and finds the next header after them.
    body, covered = hover_request("too-long"), hover_request("covered")
    answer = expect_answer(server, None)
    write_raw(
        server,
        b"Content-Length: %d\r\n\r\n%s" % (len(body) + 20, body)
        + b"Content-Length: %d\r\n\r\n%s" % (len(covered), covered),
    )
    with pytest.raises(JsonRpcException, match="Parse error") as refused:
        await asyncio.wait_for(answer, ANSWER_TIMEOUT)
    assert refused.value.code == types.ErrorCodes.ParseError
    await assert_serving(server)
