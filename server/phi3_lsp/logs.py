"""Logging for the server: stderr or a file (never stdout, which carries LSP), pygls kept quiet,
and the project's own records forwarded to the client as `window/logMessage`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

PACKAGE_LOGGER = "phi3_lsp"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
"""The levels `--log-level` takes (in any case)."""
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "INFO", log_file: str | None = None) -> None:
    """Send log records to `log_file` (or stderr) at `level` (one of `LEVELS`, in any case);
    pygls only from WARNING up."""
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(_answered_errors_in_one_line)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pygls logs every message it sends at INFO: far too much for a log a person reads.
    logging.getLogger("pygls").setLevel(logging.WARNING)


def _answered_errors_in_one_line(record: logging.LogRecord) -> bool:
    """Log a request answered with a protocol error in one line, without pygls' traceback.

    pygls logs a traceback for every such error, also for those our handlers raise by design
    (no architecture to show after a failed load): in a log a person reads, they look like
    crashes. The error is the request's answer, so one line says it. Any other exception
    keeps its traceback.
    """
    error = record.exc_info[1] if record.exc_info else None
    if error is None or not record.name.startswith("pygls"):
        return True
    # Imported here: this module is loaded before `initialize` is answered, and importing
    # pygls (with lsprotocol, ~0.25 s) would delay that answer. A pygls record means it is in.
    from pygls.exceptions import JsonRpcException

    if isinstance(error, JsonRpcException):
        record.msg, record.args = "Request answered with error %d: %s", (error.code, error.message)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger().isEnabledFor(logging.INFO)
    return True


class ClientLogHandler(logging.Handler):
    """Forwards records to the client through `send(level, message)` (e.g. window/logMessage),
    as "logger: message" whatever formatter is set.

    Attach it to the project's logger only: records from pygls itself could otherwise loop
    back through the message they are about.
    """

    def __init__(self, send: Callable[[int, str], None], level: int = logging.INFO) -> None:
        super().__init__(level)
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        """Hand the record's message to `send`; failures never reach the caller.

        Without a traceback: the client shows these lines to people, and the log (stderr or
        the log file) keeps the traceback.
        """
        try:
            self._send(record.levelno, f"{record.name}: {record.getMessage()}")
        except Exception:
            self.handleError(record)


def attach_client_handler(handler: ClientLogHandler) -> Callable[[], None]:
    """Add `handler` to the project's logger; returns a function that removes it again."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    logger.addHandler(handler)
    return lambda: logger.removeHandler(handler)
