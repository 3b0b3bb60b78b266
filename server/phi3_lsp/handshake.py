"""Answer `initialize` over stdio before the protocol libraries are imported.

Importing pygls and lsprotocol takes ~0.9 s here (lsprotocol's types alone ~0.6 s), and the
editor waits for the `initialize` answer before it sends anything else. So the server reads
the first message itself, answers it from the capabilities below, and then hands the message
to pygls, which sets up the workspace and settings from it as usual; pygls' own answer to it
is dropped. Whatever the client sends meanwhile waits in the pipe until pygls reads it.

Nothing here imports pygls or lsprotocol.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any, BinaryIO, cast

from phi3_lsp import __version__
from phi3_lsp.message_frames import frame, read_message

logger = logging.getLogger(__name__)

SERVER_NAME = "phi3-lsp"
CAPABILITIES: dict[str, Any] = {
    "textDocumentSync": {"openClose": True, "change": 2, "save": False},
    "completionProvider": {},
    "hoverProvider": True,
    "executeCommandProvider": {
        "commands": ["phi3.showArchitecture", "phi3.measureWeightReads", "phi3.status"]
    },
    "inlineCompletionProvider": {},
    "workspace": {
        "workspaceFolders": {"supported": True, "changeNotifications": True},
        "fileOperations": {},
    },
}
"""What pygls computes for the registered features (a test checks that the two agree),
without the position encoding, which depends on the client."""
POSITION_ENCODINGS = ("utf-8", "utf-16", "utf-32")
"""The encodings pygls supports; the client's first supported choice wins, else UTF-16."""


def answer_initialize(stdin: BinaryIO, stdout: BinaryIO) -> tuple[BinaryIO, BinaryIO]:
    """Read the first message from `stdin` and, if it is `initialize`, answer it on `stdout`.

    Returns the streams to give pygls: one that reads the first message again and then the
    rest of `stdin`, and one that writes to `stdout` all but pygls' answer to that request.
    """
    message = read_message(stdin)
    # pygls asks for BinaryIO but uses only readline, read, write, flush and close.
    replay = cast(BinaryIO, ReplayingReader(message, stdin))
    request = _initialize_request(message)
    if request is None:
        return replay, stdout
    stdout.write(frame(initialize_response(request)))
    stdout.flush()
    logger.debug("Answered initialize before loading the protocol libraries")
    return replay, cast(BinaryIO, AnswerDropper(stdout, request["id"]))


def initialize_response(request: dict[str, Any]) -> dict[str, Any]:
    """The answer to an `initialize` request, as pygls gives it for this server."""
    params = request.get("params") or {}
    capabilities = {"positionEncoding": negotiated_encoding(params), **CAPABILITIES}
    # pygls says "no" to the save hooks a client offers (they are not registered here).
    for hook in ("willSave", "willSaveWaitUntil"):
        if _client_capability(params, "textDocument", "synchronization", hook):
            capabilities["textDocumentSync"] = {**capabilities["textDocumentSync"], hook: False}
    return {
        "id": request["id"],
        "jsonrpc": "2.0",
        "result": {
            "capabilities": capabilities,
            "serverInfo": {"name": SERVER_NAME, "version": __version__},
        },
    }


def negotiated_encoding(params: dict[str, Any]) -> str:
    """The first position encoding the client offers that the server supports, else UTF-16."""
    offered = _client_capability(params, "general", "positionEncodings") or []
    return next((encoding for encoding in offered if encoding in POSITION_ENCODINGS), "utf-16")


class ReplayingReader:
    """Reads `replay` first, then goes on reading from `stream`."""

    def __init__(self, replay: bytes, stream: BinaryIO) -> None:
        self._replay = io.BytesIO(replay)
        self._stream = stream

    def readline(self) -> bytes:
        line = self._replay.readline()
        if line.endswith(b"\n"):
            return line
        return line + self._stream.readline()  # a line cut short by the replay's end goes on

    def read(self, size: int = -1) -> bytes:
        data = self._replay.read(size)
        if size < 0:
            return data + self._stream.read()
        if len(data) < size:
            data += self._stream.read(size - len(data))
        return data


class AnswerDropper:
    """Writes messages to `stream`, except the response to request `request_id`."""

    def __init__(self, stream: BinaryIO, request_id: int | str) -> None:
        self._stream = stream
        self._pending_id: int | str | None = request_id

    def write(self, message: bytes) -> int:
        if self._pending_id is not None and self._is_pending_response(message):
            self._pending_id = None
            return len(message)
        return self._stream.write(message)

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()

    def _is_pending_response(self, message: bytes) -> bool:
        parsed = _body(message)
        if parsed is None or "method" in parsed:
            return False
        if parsed.get("id") != self._pending_id:
            return False
        if "error" in parsed:  # the client was told it succeeded: say so where it can be seen
            logger.error("Setting up the session failed after initialize: %s", parsed["error"])
        return True


def _initialize_request(message: bytes) -> dict[str, Any] | None:
    """The parsed message if it is an `initialize` request pygls would accept, else None.

    Only the shape of the required fields is checked: pygls rejects deeper mistakes (say, a
    capability of the wrong type) after this server has answered, and logs them.
    """
    parsed = _body(message)
    if parsed is None or parsed.get("method") != "initialize":
        return None
    params = parsed.get("params")
    if not isinstance(parsed.get("id"), int | str) or not isinstance(params, dict):
        return None
    process_id = params.get("processId")
    if not isinstance(params.get("capabilities"), dict) or not (
        process_id is None or isinstance(process_id, int)
    ):
        return None
    return parsed


def _body(message: bytes) -> dict[str, Any] | None:
    """The JSON object after a message's headers, or None if it is not one."""
    _, _, body = message.partition(b"\r\n\r\n")
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _client_capability(params: dict[str, Any], *path: str) -> Any:
    """The client capability at `path` in `initialize` params (None where any step is missing)."""
    value: Any = params.get("capabilities")
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value
