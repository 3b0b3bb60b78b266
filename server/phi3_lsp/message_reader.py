"""Reading LSP messages from stdin (or a TCP connection) for pygls' message loop, one thread hop
per message.

pygls' own stdin reader sends every header line and every body through its thread pool: three
round trips between the event loop and a pool thread for each message. When the model and a
prompt's tokenizing keep both cores busy, each trip waits for a core, and a hover sent just
after a completion request waited ~4 ms longer (p50) before the server even read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import BinaryIO

from phi3_lsp.message_frames import read_message

# pygls reads header lines with `readline`, which refuses lines over the limit: those given it
# here are short (see `message_frames`), and none is to be refused anyway.
_NO_LINE_LIMIT = 2**62


class MessageReader:
    """pygls' `AsyncReader` over a blocking stream: a thread of its own reads whole messages
    and hands each to the event loop at once.

    pygls reads the stream's messages in order, each body's bytes as they arrived, under the one
    header its loop parses (see `message_frames`: a header block without a usable length is
    dropped there, where pygls would stop hearing anything). The thread reads ahead, so after
    `exit` it usually waits in a read that only the client can end: it is a daemon, and
    `reading` tells whether the process must leave without finalizing the interpreter (which
    would abort on a stream locked by a read).
    """

    def __init__(self, stream: BinaryIO, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._received = asyncio.StreamReader(limit=_NO_LINE_LIMIT, loop=loop)
        self._thread = threading.Thread(target=self._pump, name="phi3-lsp reader", daemon=True)

    def start(self) -> None:
        """Start reading (call from the event loop's thread)."""
        self._thread.start()

    @property
    def reading(self) -> bool:
        """True until the stream has ended."""
        return self._thread.is_alive()

    async def readline(self) -> bytes:
        """The next line; b"" once the stream has ended.

        First it lets the handlers of the message just handled start. Reading what is already
        here does not wait, so pygls would otherwise handle a request and the edit sent after
        it before the request's handler ran: a completion then read the edited text, a version
        its position does not belong to.
        """
        await asyncio.sleep(0)
        return await self._received.readline()

    async def readexactly(self, size: int) -> bytes:
        """The next `size` bytes, fewer if the stream ends first."""
        try:
            return await self._received.readexactly(size)
        except asyncio.IncompleteReadError as cut_short:
            return cut_short.partial

    def _pump(self) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is closed: the server exited
            try:
                while message := read_message(self._stream):
                    self._loop.call_soon_threadsafe(self._received.feed_data, message)
            except (OSError, ValueError):
                pass  # a broken or closed stream ends like one the client closed
            self._loop.call_soon_threadsafe(self._received.feed_eof)
