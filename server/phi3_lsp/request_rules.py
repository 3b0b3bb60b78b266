"""Answers JSON-RPC and LSP require for requests that pygls would leave unanswered.

pygls drops a request whose params do not match the protocol's types, and one that comes after
`shutdown`: the client then waits for an answer that never comes. Its `shutdown` failed with an
internal error while a command still waited (for a model's load, say), so an editor that closed
then killed the server instead of its clean exit. It also runs requests that
come before `initialize`, which then fail with a traceback. Each of these gets an error
response here instead, with a message that says what was wrong; a body that is not JSON (a
traceback and an "Error in server" pop-up in pygls) gets JSON-RPC's parse error, and JSON that
is no well-formed message gets the answer `malformed_messages` gives it. A
notification whose params do not fit is dropped with one line in the log (pygls logs two
tracebacks); after a dropped edit, the server's copy of the document differs from the
editor's: it is let go, and the user told. A client's answer to one of the server's requests
whose result does not fit (a `workspace/configuration` answered with null rather than an
array) fails that request at once with `UnfitAnswer`: pygls showed "Error in server" and left
the request waiting for an answer that had come.

Its tables of pending requests hold only what is pending: pygls kept an entry for every edit,
open, close and command it had handled, and for every request of the server's that the client
refused, for as long as the server ran.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import cattrs
from lsprotocol import types
from pygls.protocol import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
    LanguageServerProtocol,
)
from pygls.protocol.json_rpc import MsgId
from pygls.protocol.language_server import lsp_method

from phi3_lsp.malformed_messages import refusal_of
from phi3_lsp.strict_params import leniently

logger = logging.getLogger(__name__)

_NOTIFICATION_METHODS = frozenset(
    method for method, (_, result, *_) in types.METHOD_TO_TYPES.items() if result is None
)
"""LSP's notifications: what has no result."""


@dataclass(frozen=True)
class _Refused:
    """A request answered with an error instead of being handled."""

    id: int | str
    code: int
    message: str


class _DocumentKeeper(Protocol):
    """The server this protocol serves (server.Phi3LanguageServer, which imports this module)."""

    def forget_document(self, uri: str) -> None: ...


@dataclass(frozen=True)
class _Dropped:
    """A notification whose params do not fit the protocol: not handled."""

    method: str
    problems: str
    uri: str | None


@dataclass(frozen=True)
class _UnfitResult:
    """A client's answer to a request of the server's, whose result does not fit its type."""

    id: int | str
    problems: str


class UnfitAnswer(Exception):
    """What a request of the server's fails with when the client's result does not fit the
    protocol."""


def is_unreadable(error: BaseException | None) -> bool:
    """True for a message body that is not JSON: cut short, or not UTF-8."""
    return isinstance(error, json.JSONDecodeError | UnicodeDecodeError)


class UnreadableMessageTracebacks(logging.Filter):
    """Drops pygls' traceback of a body that is not JSON: `answer_unreadable` logs it in a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and is_unreadable(record.exc_info[1]))


class RequestRulesProtocol(LanguageServerProtocol):
    """pygls' LSP protocol, answering every request (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._initialize_seen = False

    def structure_message(self, data: dict[str, Any]) -> Any:
        if "jsonrpc" in data and refusal_of(data, _NOTIFICATION_METHODS) is not None:
            return data  # as pygls leaves JSON that is no message: refused in handle_message
        if _is_notification(data):
            # As pygls makes it, without its two tracebacks for params that do not fit.
            notification_type = self.get_message_type(data["method"]) or JsonRPCNotification
            try:
                return self._converter.structure(data, notification_type)
            except Exception as error:
                return _Dropped(data["method"], params_problems(error), _uri(data))
        if _is_result(data):
            # As pygls reads it, but a result that does not fit fails its request (below).
            result_type = self._result_types.pop(data["id"], None) or JsonRPCResponseMessage
            try:
                return self._converter.structure(data, result_type)
            except Exception as error:
                return _UnfitResult(data["id"], params_problems(error))
        if _is_error_answer(data):
            # pygls lets go of a request's result type only as its result comes: each request
            # the client refused (a progress bar it declines, every time) kept one for good.
            self._result_types.pop(data["id"], None)
        if not _is_request(data):
            return super().structure_message(data)
        request_type = self.get_message_type(data["method"])
        if request_type is None and data.get("params") is None:
            # pygls' converter refuses a custom request without params (or with null ones):
            # made here, it reaches its handler, or MethodNotFound when there is none.
            return JsonRPCRequestMessage(
                id=data["id"], method=data["method"], params=None, jsonrpc=data["jsonrpc"]
            )
        # Answered already by the handshake: refused here, the session would be dead.
        reading = leniently() if data["method"] == types.INITIALIZE else contextlib.nullcontext()
        try:
            with reading:
                return self._converter.structure(data, request_type or JsonRPCRequestMessage)
        except Exception as error:  # a converter failing in its own way: say so, still answer
            problems = params_problems(error)
            message = f"{data['method']}: its params do not fit the protocol ({problems})"
        return _Refused(data["id"], types.ErrorCodes.InvalidParams, message)

    def handle_message(self, message: Any) -> None:
        if isinstance(message, _Refused):
            self._refuse(message)
            return
        if message is None or isinstance(message, dict | list | str | int | float):
            # JSON, but no well-formed message: structure_message hands those on as they are
            # (pygls' handle_message failed on them, or dropped them unanswered).
            answer = refusal_of(message, _NOTIFICATION_METHODS)
            assert answer is not None  # structure_message made every well-formed one an object
            self._answer_error(answer.id, answer.code, answer.message)
            return
        if self._shutdown and _is_late_notice(message):
            # Editors send these as they stop the server (a document closed, a setting
            # changed): pygls warns about each; there is nothing left to do with them.
            logger.debug("%s after shutdown: dropped", getattr(message, "method", "A response"))
            return
        if isinstance(message, _Dropped):
            self._report_dropped(message)
            return
        if isinstance(message, _UnfitResult):
            self._fail_request(message)
            return
        refusal = self._refusal(message)
        if refusal is None:
            super().handle_message(message)
        else:
            self._refuse(refusal)

    def _execute_handler(
        self,
        msg_id: MsgId,
        handler: Callable[..., Any],
        callback: Callable[[Any], None],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        """pygls' run of a handler, whose entry in the table of pending requests goes once it
        has run. pygls files every notification that runs as a generator (each edit, open and
        close), and the command each `workspace/executeCommand` runs, under an id of its own
        that only a client's request would take out again: the table grew by one finished
        future a keystroke for as long as the server ran."""
        super()._execute_handler(msg_id, handler, callback, args, kwargs)
        running = self._request_futures.get(msg_id)
        if running is not None:
            running.add_done_callback(functools.partial(self._forget_finished, msg_id))

    def _forget_finished(self, msg_id: MsgId, finished: object) -> None:
        # Only the future it ran: a request's own entry went as it was answered.
        if self._request_futures.get(msg_id) is finished:
            self._request_futures.pop(msg_id, None)

    @lsp_method(types.SHUTDOWN)
    def lsp_shutdown(self, *args: Any) -> Generator[Any, Any, None]:
        """pygls' shutdown, the requests still pending cancelled first. pygls cancels them
        while it walks its table of pending requests, and a request that pygls runs as a
        generator (`workspace/executeCommand`) leaves the table as it is cancelled: the walk
        failed ("dictionary changed size during iteration")."""
        for msg_id, pending in list(self._request_futures.items()):
            if msg_id != self.msg_id:  # not the shutdown's own
                pending.cancel()
        yield from super().lsp_shutdown(*args)

    def answer_unreadable(self, error: ValueError) -> None:
        """JSON-RPC's answer to a body that is not JSON: a parse error, with a null id, since
        the message's own id cannot be read (pygls logged a traceback and answered nothing)."""
        self._answer_error(None, types.ErrorCodes.ParseError, f"Parse error: {error}")

    def _answer_error(self, msg_id: int | str | None, code: int, message: str) -> None:
        """An error response to a message that is not one pygls can handle, logged in a line."""
        logger.warning("A message was refused: %s", message)
        # As a plain dict: the protocol's converter leaves out a null id, which JSON-RPC requires.
        error = {"code": code, "message": message}
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": error})

    def _refuse(self, refusal: _Refused) -> None:
        error = types.ResponseError(code=refusal.code, message=refusal.message)
        self._send_response(refusal.id, None, error)

    def _report_dropped(self, dropped: _Dropped) -> None:
        logger.warning(
            "%s dropped: its params do not fit the protocol (%s)", dropped.method, dropped.problems
        )
        if dropped.method != types.TEXT_DOCUMENT_DID_CHANGE or dropped.uri is None:
            return
        # Later edits are positions in the editor's text, which now has this one too: the
        # server's copy is let go, so that no answer comes from text the user does not have.
        cast(_DocumentKeeper, self._server).forget_document(dropped.uri)
        self.notify(
            types.WINDOW_SHOW_MESSAGE,
            types.ShowMessageParams(
                type=types.MessageType.Warning,
                message=f"phi3-lsp could not read an edit of {dropped.uri} ({dropped.problems}): "
                "it has no hovers or completions there until you close and reopen it.",
            ),
        )

    def _fail_request(self, unfit: _UnfitResult) -> None:
        """Fail the request `unfit` answers: its caller says what it does without the answer."""
        pending = self._request_futures.pop(unfit.id, None)
        if pending is None:
            logger.warning("An answer to no pending request (id %r) does not fit", unfit.id)
            return
        pending.set_exception(
            UnfitAnswer(f"the answer does not fit the protocol ({unfit.problems})")
        )

    def _refusal(self, message: Any) -> _Refused | None:
        method, msg_id = getattr(message, "method", None), getattr(message, "id", None)
        if method is None or msg_id is None:
            return None  # a notification or a response
        if method == types.INITIALIZE:
            if self._initialize_seen:
                code = types.ErrorCodes.InvalidRequest
                return _Refused(
                    msg_id, code, "initialize came again: a session is initialized once"
                )
            self._initialize_seen = True
            return None
        if not self._initialize_seen:
            code = types.ErrorCodes.ServerNotInitialized
            return _Refused(msg_id, code, f"{method} came before initialize")
        if self._shutdown:
            code = types.ErrorCodes.InvalidRequest
            return _Refused(msg_id, code, f"{method} came after shutdown: only exit is left")
        return None


def _is_request(data: Any) -> bool:
    return isinstance(data, dict) and "jsonrpc" in data and "id" in data and "method" in data


def _is_result(data: Any) -> bool:
    """A response that is not an error (pygls reads any message with an id and no method as
    one)."""
    return (
        isinstance(data, dict)
        and "jsonrpc" in data
        and "id" in data
        and "method" not in data
        and "error" not in data
    )


def _is_error_answer(data: Any) -> bool:
    """An error response to a request of the server's, with an id it may have filed."""
    return (
        isinstance(data, dict)
        and "jsonrpc" in data
        and isinstance(data.get("id"), int | str)
        and "method" not in data
        and "error" in data
    )


def _is_notification(data: Any) -> bool:
    return isinstance(data, dict) and "jsonrpc" in data and "id" not in data and "method" in data


def _is_late_notice(message: Any) -> bool:
    """A notification other than `exit`, or a response: what may come after `shutdown`."""
    method = getattr(message, "method", None)
    return method != types.EXIT and (method is None or getattr(message, "id", None) is None)


def params_problems(error: BaseException) -> str:
    """What is wrong with params the converter refused, e.g. "required field missing @ $.x"."""
    if isinstance(error, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(error))
    return str(error) or type(error).__name__


def _uri(data: dict[str, Any]) -> str | None:
    params = data.get("params")
    document = params.get("textDocument") if isinstance(params, dict) else None
    uri = document.get("uri") if isinstance(document, dict) else None
    return uri if isinstance(uri, str) else None
