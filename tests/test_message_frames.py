"""The server's reading of LSP's framing, byte for byte: what a header block gives, what is
dropped (with a line in the log), and where reading goes on."""

from __future__ import annotations

import io
import logging

import pytest

from phi3_lsp.message_frames import read_message

FIRST = b'{"jsonrpc": "2.0", "method": "initialized", "params": {}}'
SECOND = b'{"jsonrpc": "2.0", "id": 2, "method": "shutdown"}'


def framed(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def read_all(data: bytes) -> list[bytes]:
    """The messages `read_message` gives until the stream ends, each as pygls then reads it."""
    stream = io.BytesIO(data)
    messages = []
    while message := read_message(stream):
        messages.append(message)
    return messages


def test_well_formed_messages_come_as_they_were_sent() -> None:
    body_with_header_text = b'{"text": "Content-Length: 3\\r\\n", "\\u00e9": "\xc3\xa9"}'
    stream = framed(FIRST) + b"\r\n" + framed(body_with_header_text) + framed(SECOND)
    assert read_all(stream) == [framed(FIRST), framed(body_with_header_text), framed(SECOND)]


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length: %d\r\n",
        b"Content-Length: %d\r\nX-Original-Content-Length: 5\r\n",
        b"content-length:%d\n",
    ],
    ids=["another header first", "a header ending in Content-Length", "lower case, line feeds"],
)
def test_the_length_is_read_from_its_own_header(headers: bytes) -> None:
    data = headers.replace(b"%d", b"%d" % len(FIRST)) + b"\r\n" + FIRST + framed(SECOND)
    assert read_all(data) == [framed(FIRST), framed(SECOND)]


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        (b"Content-Type: application/json\r\n", "is missing"),
        (b"Content-Length:\r\n", "is not a number of bytes"),
        (b"Content-Length: 0\r\n", "is 0: there is no message"),
    ],
    ids=["none", "empty", "zero"],
)
def test_a_block_without_a_usable_length_is_dropped_and_said(
    headers: bytes, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Its body, which has no line break, runs into the next header on the same line.
    with caplog.at_level(logging.WARNING):
        messages = read_all(headers + b"\r\n" + FIRST + framed(SECOND))
    assert messages == [framed(SECOND)]
    assert f"A message was dropped: its Content-Length {problem}" in caplog.text
