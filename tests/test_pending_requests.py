"""The server's table of pending requests holds the requests still running, and nothing else.

pygls filed each notification it runs as a generator (every edit, open and close) and the
command of each `workspace/executeCommand` in it, and never took them out: a day of typing
left tens of thousands of finished futures in memory. A request of the server's that the client
refused left its result type filed for good.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

from lsprotocol import types

from in_memory_server import answers, receive, sent_messages, serve_in_memory
from phi3_lsp.features.commands import STATUS
from phi3_lsp.server import Phi3LanguageServer

URI = "file:///typed.py"
EDITS = 500


def type_in_a_document(server: Phi3LanguageServer) -> None:
    document = {"uri": URI, "languageId": "python", "version": 1, "text": ""}
    receive(server, types.TEXT_DOCUMENT_DID_OPEN, {"textDocument": document})
    for version in range(2, EDITS + 2):
        end = {"line": 0, "character": version - 2}
        receive(
            server,
            types.TEXT_DOCUMENT_DID_CHANGE,
            {
                "textDocument": {"uri": URI, "version": version},
                "contentChanges": [{"range": {"start": end, "end": end}, "text": "x"}],
            },
        )
    receive(server, types.TEXT_DOCUMENT_DID_CLOSE, {"textDocument": {"uri": URI}})


def test_edits_and_commands_handled_leave_no_pending_request() -> None:
    async def session() -> tuple[Phi3LanguageServer, io.BytesIO]:
        server, sent = serve_in_memory()
        type_in_a_document(server)
        for msg_id in range(1, 11):
            receive(server, types.WORKSPACE_EXECUTE_COMMAND, {"command": STATUS}, msg_id)
        for _ in range(5):  # the commands' tasks run, and their answers go out
            await asyncio.sleep(0)
        return server, sent

    server, sent = asyncio.run(session())
    assert sorted(answers(sent)) == list(range(1, 11))
    assert server.workspace.text_documents == {}  # the document was typed in, then closed
    assert server.protocol._request_futures == {}


def test_a_command_still_running_can_be_cancelled() -> None:
    async def session() -> dict[int, dict[str, Any]]:
        server, sent = serve_in_memory()
        with server.reading_settings():  # the status waits for settings announced before it
            receive(server, types.WORKSPACE_EXECUTE_COMMAND, {"command": STATUS}, 1)
            await asyncio.sleep(0)
            type_in_a_document(server)
            receive(server, types.CANCEL_REQUEST, {"id": 1})
            for _ in range(5):
                await asyncio.sleep(0)
        for _ in range(5):
            await asyncio.sleep(0)
        assert server.protocol._request_futures == {}
        return answers(sent)

    answered = asyncio.run(session())
    assert answered[1]["error"]["code"] == types.LSPErrorCodes.RequestCancelled


def test_a_request_the_client_refused_leaves_nothing_pending() -> None:
    async def session() -> Phi3LanguageServer:
        server, sent = serve_in_memory()
        refused = []
        for _ in range(3):
            asked = server.protocol.send_request_async(
                types.WINDOW_WORK_DONE_PROGRESS_CREATE,
                types.WorkDoneProgressCreateParams(token="phi3-load"),
            )
            request = sent_messages(sent)[-1]
            refusal = {"code": types.ErrorCodes.MethodNotFound, "message": "no progress bars"}
            message = {"jsonrpc": "2.0", "id": request["id"], "error": refusal}
            server.protocol.handle_message(server.protocol.structure_message(message))
            try:
                await asked
            except Exception as error:
                refused.append(error)
        assert len(refused) == 3  # each request failed with the client's refusal
        return server

    server = asyncio.run(session())
    assert server.protocol._request_futures == {}
    assert server.protocol._result_types == {}
