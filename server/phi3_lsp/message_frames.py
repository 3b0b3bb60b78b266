"""LSP's framing on a byte stream: header lines, a blank line, then Content-Length bytes of body.

pygls' message loop takes a header only as `Content-Length: N\\r\\n` to the byte. A header block
it cannot take (no Content-Length, a typo in it, a length that is no number, a name in lower
case) made it read the body after it as a header line, glued to the next message's header: it
then missed every header that followed, and answered nothing for the rest of the session. So
the server reads the framing here and hands pygls each message in that one form: a header
block without a usable length is dropped with a line in the log, and reading goes on at the
next Content-Length header.

Nothing here imports pygls or lsprotocol: the handshake reads the first message with this too.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, BinaryIO

logger = logging.getLogger(__name__)

_CONTENT_LENGTH = re.compile(rb"(?is)[ \t]*content-length[ \t]*:(.*)")
# Failing that, the last Content-Length on a line: text before it is the end of a body whose
# own header was dropped (or that ran past its length). Valid JSON cannot hold such a line,
# even in a string. Not first: `X-Original-Content-Length` is another header.
_GLUED_CONTENT_LENGTH = re.compile(rb"(?is).*content-length[ \t]*:(.*)")
_LENGTH_VALUE = re.compile(rb"[0-9]+")
_LARGEST_BODY = 1 << 30
"""A longer Content-Length is taken for a broken header, not waited for: no editor sends a GiB
in one message (nor could its document be tokenized here)."""
_BODY_PIECE = 1 << 20
"""Bytes a body is read in: a length far beyond what arrives is not allocated all at once."""
_SHOWN_HEADERS = 200
"""Characters of a dropped header block the log shows."""


def read_message(stream: BinaryIO) -> bytes:
    """The next message, as `Content-Length: N\\r\\n\\r\\n` and its body, the body's bytes as they
    arrived (fewer if the stream ends first); b"" once the stream has ended.

    Header blocks without a usable Content-Length are dropped, each with a line in the log.
    """
    while (headers := _header_block(stream)) is not None:
        length = _content_length(headers)
        if length is not None:
            return b"Content-Length: %d\r\n\r\n%s" % (length, _read_body(stream, length))
    return b""


def frame(message: dict[str, Any]) -> bytes:
    """`message` with the Content-Length header LSP puts before each body."""
    body = json.dumps(message).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def _header_block(stream: BinaryIO) -> list[bytes] | None:
    """The header lines up to the next blank line; None if the stream ends first."""
    lines: list[bytes] = []
    while line := stream.readline():
        if not line.strip():
            return lines
        lines.append(line)
    return None


def _content_length(headers: list[bytes]) -> int | None:
    """The body's length the headers give, or None (logged) when they give none."""
    values = [match[1].strip() for match in map(_CONTENT_LENGTH.fullmatch, headers) if match]
    if not values:
        glued = map(_GLUED_CONTENT_LENGTH.fullmatch, headers)
        values = [match[1].strip() for match in glued if match][-1:]
    problem = "is missing"
    if values:
        digits = values[0].lstrip(b"0")
        if not _LENGTH_VALUE.fullmatch(values[0]):
            problem = "is not a number of bytes"
        elif not digits:
            problem = "is 0: there is no message"
        # Checked before `int`: it refuses strings of over 4300 digits.
        elif len(digits) > len(str(_LARGEST_BODY)) or int(digits) > _LARGEST_BODY:
            problem = "is over 1 GiB"
        else:
            return int(digits)
    if headers:  # a blank line alone (after a body, say) is no message
        shown = b"".join(headers).decode("utf-8", "replace")[:_SHOWN_HEADERS]
        logger.warning(
            "A message was dropped: its Content-Length %s (headers %r); reading goes on at the "
            "next Content-Length header",
            problem,
            shown,
        )
    return None


def _read_body(stream: BinaryIO, length: int) -> bytes:
    """`length` bytes of `stream`, fewer if it ends first."""
    pieces: list[bytes] = []
    while length > 0 and (piece := stream.read(min(length, _BODY_PIECE))):
        pieces.append(piece)
        length -= len(piece)
    return b"".join(pieces)
