"""The server's log: what it keeps out of a log a person reads."""

from __future__ import annotations

import asyncio
import logging

from phi3_lsp.logs import _not_a_cancelled_connection


def asyncio_record(message: str, error: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        "asyncio", logging.ERROR, __file__, 1, message, (), (type(error), error, None)
    )


def test_a_connection_cancelled_by_the_exit_is_not_logged_as_an_error() -> None:
    callback = "Exception in callback StreamReaderProtocol.connection_made.<locals>.callback()"
    assert not _not_a_cancelled_connection(asyncio_record(callback, asyncio.CancelledError()))
    # asyncio's other errors keep their traceback.
    assert _not_a_cancelled_connection(asyncio_record(callback, ValueError("a real one")))
    other = "Exception in callback Server._wakeup()"
    assert _not_a_cancelled_connection(asyncio_record(other, asyncio.CancelledError()))
