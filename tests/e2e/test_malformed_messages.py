"""JSON that is no well-formed JSON-RPC message, written to the server byte for byte: each is
answered as JSON-RPC 2.0 says, with one warning line in the log, and the server goes on serving.
Before, some went unanswered (the client waited for ever) and others got an internal error with
a Python traceback in it."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from e2e.lsp_session import Phi3Client, hover_text, start, stop, vscode_capabilities

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMPT = "The capital of France is"
URI = "untitled:malformed.txt"
STATUS = {"command": "phi3.status"}


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("malformed") / "server.log"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(offline_pack: None, hf_home: Path, log_file: Path) -> AsyncIterator[Phi3Client]:
    """A server with Phi-3's tokenizer and one document open, shared by the module's tests."""
    client = await start(None, hf_home, vscode_capabilities(), log_file=log_file)
    await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    client.open_text("malformed.txt", PROMPT)
    yield client
    await stop(client)


async def answer_before_the_next(
    server: Phi3Client, log_file: Path, message: dict[str, Any], msg_id: str | None
) -> JsonRpcException:
    """The error answering `message`, written as it is, which has come by the time a hover sent
    after it is answered (messages are handled in order); the log has one line for it."""
    logged = log_file.read_text(encoding="utf-8")
    answer: concurrent.futures.Future[Any] = concurrent.futures.Future()
    server.protocol._request_futures[msg_id] = answer  # type: ignore[index]
    body = json.dumps(message).encode()
    assert server.protocol.writer is not None
    server.protocol.writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert "capital" in hover_text(await server.hover_at(URI, 0, 6))  # still serving
    assert answer.done(), "the message got no answer"
    error = answer.exception()
    assert isinstance(error, JsonRpcException)
    log = log_file.read_text(encoding="utf-8").removeprefix(logged).splitlines()
    assert [line for line in log if " WARNING " in line] == [
        line for line in log if "A message was refused" in line
    ]
    assert len([line for line in log if "A message was refused" in line]) == 1
    assert not [line for line in log if " ERROR " in line or "Traceback" in line]
    assert not [m for m in server.messages if "Error in server" in m.message]
    return error


def status_request(**fields: Any) -> dict[str, Any]:
    """A `phi3.status` command request, with `fields` changed."""
    request = {"jsonrpc": "2.0", "method": "workspace/executeCommand", "params": STATUS}
    return {**request, **fields}


@pytest.mark.parametrize(
    ("message", "answer_id", "problem"),
    [
        (status_request(id="v1", jsonrpc="1.0"), "v1", '"jsonrpc" must be "2.0", not "1.0"'),
        (status_request(id="v2", jsonrpc=2), "v2", '"jsonrpc" must be "2.0", not 2'),
        ({"jsonrpc": "2.0", "id": "m5", "method": 5}, "m5", '"method" must be a string, not 5'),
        ({"jsonrpc": "2.0", "id": "m0", "method": None}, "m0", '"method" must be a string'),
        # JSON-RPC: "If there was an error in detecting the id ... it MUST be Null."
        (status_request(id={"a": 1}), None, '"id" must be a string or an integer'),
        (status_request(id=["a"]), None, '"id" must be a string or an integer'),
    ],
    ids=[
        "jsonrpc 1.0",
        "jsonrpc a number",
        "method a number",
        "method null",
        "id object",
        "id array",
    ],
)
async def test_a_malformed_request_is_an_invalid_request_answered_to_its_readable_id(
    server: Phi3Client, log_file: Path, message: dict[str, Any], answer_id: str | None, problem: str
) -> None:
    refused = await answer_before_the_next(server, log_file, message, answer_id)
    assert refused.code == types.ErrorCodes.InvalidRequest
    assert problem in refused.message
    assert "Traceback" not in json.dumps(refused.data)


async def test_a_document_opened_with_an_id_is_refused_and_not_opened(
    server: Phi3Client, log_file: Path
) -> None:
    uri = "untitled:opened-with-an-id.txt"
    document = {"uri": uri, "languageId": "plaintext", "version": 1, "text": PROMPT}
    message = {
        "jsonrpc": "2.0",
        "id": "open",
        "method": types.TEXT_DOCUMENT_DID_OPEN,
        "params": {"textDocument": document},
    }
    refused = await answer_before_the_next(server, log_file, message, "open")
    assert refused.code == types.ErrorCodes.MethodNotFound
    assert "textDocument/didOpen is a notification" in refused.message
    assert await server.hover_at(uri, 0, 6) is None  # as for a document never opened


@pytest.mark.parametrize(
    ("method", "params"),
    [
        (types.TEXT_DOCUMENT_DID_SAVE, {"textDocument": {"uri": URI}}),
        (types.INITIALIZED, {}),
        (types.CANCEL_REQUEST, {"id": "no-such-request"}),
        (types.EXIT, None),  # last: a server that took it for `exit` would end here
    ],
)
async def test_a_notification_sent_with_an_id_is_method_not_found(
    server: Phi3Client, log_file: Path, method: str, params: Any
) -> None:
    message = {"jsonrpc": "2.0", "id": f"{method} with an id", "method": method, "params": params}
    refused = await answer_before_the_next(server, log_file, message, message["id"])
    assert refused.code == types.ErrorCodes.MethodNotFound
    assert refused.message == f"{method} is a notification: it is sent without an id"
