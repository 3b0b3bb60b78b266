"""Answers JSON-RPC and LSP require for requests that pygls would leave unanswered.

pygls drops a request whose params do not match the protocol's types, and one that comes after
`shutdown`: the client then waits for an answer that never comes. It also runs requests that
come before `initialize`, which then fail with a traceback. Each of these gets an error
response here instead, with a message that says what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cattrs
from lsprotocol import types
from pygls.protocol import JsonRPCRequestMessage, LanguageServerProtocol


@dataclass(frozen=True)
class _Refused:
    """A request answered with an error instead of being handled."""

    id: int | str
    code: int
    message: str


class RequestRulesProtocol(LanguageServerProtocol):
    """pygls' LSP protocol, answering every request (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._initialize_seen = False

    def structure_message(self, data: dict[str, Any]) -> Any:
        if not _is_request(data):
            return super().structure_message(data)
        request_type = self.get_message_type(data["method"])
        if request_type is None and data.get("params") is None:
            # pygls' converter refuses a custom request without params (or with null ones):
            # made here, it reaches its handler, or MethodNotFound when there is none.
            return JsonRPCRequestMessage(
                id=data["id"], method=data["method"], params=None, jsonrpc=data["jsonrpc"]
            )
        try:
            return self._converter.structure(data, request_type or JsonRPCRequestMessage)
        except cattrs.BaseValidationError as error:
            problems = "; ".join(cattrs.transform_error(error))
            message = f"{data['method']}: its params do not fit the protocol ({problems})"
        except Exception as error:  # a converter failing in its own way: say so, still answer
            message = f"{data['method']}: its params could not be read ({error})"
        return _Refused(data["id"], types.ErrorCodes.InvalidParams, message)

    def handle_message(self, message: Any) -> None:
        refusal = message if isinstance(message, _Refused) else self._refusal(message)
        if refusal is None:
            super().handle_message(message)
            return
        error = types.ResponseError(code=refusal.code, message=refusal.message)
        self._send_response(refusal.id, None, error)

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
