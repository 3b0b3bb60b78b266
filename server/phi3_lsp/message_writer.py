"""Writing LSP messages to the client's stream: stdout, or a TCP connection.

pygls' own writer raises once the client is gone (a closed pipe, a connection reset by an
editor that was killed), and pygls logs each message sent after that with a traceback.
"""

from __future__ import annotations

import contextlib
import logging
from typing import BinaryIO

logger = logging.getLogger(__name__)


class MessageWriter:
    """pygls' writer: each message written whole and flushed; once the client is gone, the
    rest are dropped after one log line."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._client_gone = False

    def write(self, data: bytes) -> None:
        if self._client_gone:
            return
        try:
            self._stream.write(data)
            self._stream.flush()
        except OSError as error:  # BrokenPipeError, ConnectionResetError
            self._client_gone = True
            logger.error("The client closed the connection: %s", error.strerror or error)

    def close(self) -> None:
        # A message left in the buffer has no one to go to.
        with contextlib.suppress(OSError):
            self._stream.close()
