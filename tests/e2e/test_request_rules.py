"""Every request gets an answer, as JSON-RPC and LSP require: params that do not fit, requests
before `initialize` or after `shutdown`, and `exit` without `shutdown` (exit code 1). A settings
change before `initialized` is shown as one after it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.protocol import JsonRPCNotification, JsonRPCRequestMessage

from e2e.lsp_session import ANSWER_TIMEOUT, Phi3Client, hover_text, start, stop, vscode_capabilities

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

HOVER_PARAMS = {
    "textDocument": {"uri": "untitled:rules.txt"},
    "position": {"line": 0, "character": 4},
}


async def raw_request(client: Phi3Client, method: str, params: Any) -> Any:
    """A request with `params` as given, even where they break the protocol's types (pygls'
    own request methods type the params by the method, so this one goes out by hand)."""
    protocol = client.protocol
    msg_id = str(uuid.uuid4())
    answer: concurrent.futures.Future[Any] = concurrent.futures.Future()
    protocol._request_futures[msg_id] = answer
    request = JsonRPCRequestMessage(id=msg_id, method=method, params=params, jsonrpc="2.0")
    protocol._send_data(request)
    return await asyncio.wait_for(asyncio.wrap_future(answer), ANSWER_TIMEOUT)


async def exit_code(client: Phi3Client) -> int | None:
    """The server's exit code once it has gone."""
    process = client._server  # pygls keeps the child process only here
    assert process is not None
    code = await asyncio.wait_for(process.wait(), ANSWER_TIMEOUT)
    await client.stop()  # type: ignore[no-untyped-call]
    return code


async def test_params_that_do_not_fit_are_refused_naming_the_field(
    offline_pack: None, hf_home: Path
) -> None:
    client = await start(None, hf_home, vscode_capabilities())
    try:
        client.open_text("rules.txt", "The capital of France is")
        bad_position = {**HOVER_PARAMS, "position": {"line": 0, "character": -1}}
        with pytest.raises(JsonRpcException, match=r"textDocument/hover.*position") as refused:
            await raw_request(client, types.TEXT_DOCUMENT_HOVER, bad_position)
        assert refused.value.code == types.ErrorCodes.InvalidParams
        # Not taken for line 0: a client that sends these has a bug to hear of.
        for line in ("0", 0.5, True):
            guessed = {**HOVER_PARAMS, "position": {"line": line, "character": 4}}
            with pytest.raises(
                JsonRpcException, match=r"expected int @ \$\.params\.position\.line"
            ):
                await raw_request(client, types.TEXT_DOCUMENT_HOVER, guessed)
        letters = {"command": "phi3.status", "arguments": "xyz"}  # not three arguments
        with pytest.raises(JsonRpcException, match=r"@ \$\.params\.arguments"):
            await raw_request(client, types.WORKSPACE_EXECUTE_COMMAND, letters)
        with pytest.raises(JsonRpcException, match="takes a text document and a position"):
            await raw_request(client, "phi3/readAtCursor", None)
        no_line = {**HOVER_PARAMS, "position": {"character": 3}}
        with pytest.raises(JsonRpcException, match=r"required field missing @ \$\.position"):
            await raw_request(client, "phi3/readAtCursor", no_line)
        with pytest.raises(JsonRpcException, match="phi3/noSuchMethod") as unknown:
            await raw_request(client, "phi3/noSuchMethod", None)
        assert unknown.value.code == types.ErrorCodes.MethodNotFound
        no_command: dict[str, Any] = {"arguments": []}
        with pytest.raises(JsonRpcException, match=r"required field missing.*command"):
            await raw_request(client, types.WORKSPACE_EXECUTE_COMMAND, no_command)
        # An edit of a document that was never opened is dropped, not shown as an error.
        never_opened = types.VersionedTextDocumentIdentifier(
            uri="untitled:never-opened.txt", version=2
        )
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=never_opened,
                content_changes=[types.TextDocumentContentChangeWholeDocument(text="x")],
            )
        )
        # The server goes on serving, and the client was sent no traceback.
        await client.wait_for_status(lambda status: status["state"] == "ready")
        assert "capital" in hover_text(await client.hover_at("untitled:rules.txt", 0, 6))
        assert not [m for m in client.messages if "Traceback" in m.message]
        assert not [m for m in client.messages if "never-opened" in m.message]
    finally:
        await stop(client)


async def test_a_body_that_is_not_json_rpc_gets_an_error_and_the_server_goes_on(
    offline_pack: None, hf_home: Path, tmp_path: Path
) -> None:
    log_file = tmp_path / "server.log"
    client = await start(None, hf_home, vscode_capabilities(), log_file=log_file)
    protocol = client.protocol
    try:
        uri = client.open_text("parse.txt", "The capital of France is")
        parse_error, invalid = types.ErrorCodes.ParseError, types.ErrorCodes.InvalidRequest
        for body, problem, code in [
            (b'{"jsonrpc": "2.0", "id": 7, "method": "textDoc', "Unterminated", parse_error),
            (b'{"jsonrpc": "2.0", "id": 8, "method": "\xff"}', "can't decode byte", parse_error),
            (b"42", "Invalid Request", invalid),
            (b'[{"jsonrpc": "2.0", "method": "initialized"}]', "Invalid Request", invalid),
        ]:
            # JSON-RPC: "If there was an error in detecting the id ... it MUST be Null."
            answer: concurrent.futures.Future[Any] = concurrent.futures.Future()
            protocol._request_futures[None] = answer  # type: ignore[index]
            assert protocol.writer is not None
            protocol.writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            with pytest.raises(JsonRpcException, match=problem) as refused:
                await asyncio.wait_for(asyncio.wrap_future(answer), ANSWER_TIMEOUT)
            assert refused.value.code == code
        await client.wait_for_status(lambda status: status["state"] == "ready")
        assert "capital" in hover_text(await client.hover_at(uri, 0, 6))
        assert not [m for m in client.messages if "Error in server" in m.message]
        assert "Traceback" not in log_file.read_text(encoding="utf-8")
    finally:
        await stop(client)


async def test_an_edit_that_does_not_fit_lets_the_document_go_and_says_so(
    offline_pack: None, hf_home: Path, tmp_path: Path
) -> None:
    log_file = tmp_path / "server.log"
    client = await start(None, hf_home, vscode_capabilities(), log_file=log_file)
    try:
        uri = client.open_text("edits.txt", "The capital of France is")
        bad_range = {"start": {"line": -1, "character": 0}, "end": {"line": 0, "character": 2}}
        edit = {
            "textDocument": {"uri": uri, "version": 2},
            "contentChanges": [{"range": bad_range, "text": "A"}],
        }
        client.protocol._send_data(
            JsonRPCNotification(method=types.TEXT_DOCUMENT_DID_CHANGE, params=edit, jsonrpc="2.0")
        )
        # Read in order: the edit is dropped, and with it the server's copy, which now differs
        # from the editor's ("AThe capital..."): no answer comes from it until it is reopened.
        await client.wait_for_status(lambda status: status["state"] == "ready")
        assert await client.hover_at(uri, 0, 6) is None
        warnings = [m.message for m in client.messages if "an edit" in m.message]
        assert warnings == [
            f"phi3-lsp could not read an edit of {uri} (invalid value @ "
            "$.params.content_changes[0].range.start): it has no hovers or completions there "
            "until you close and reopen it."
        ]
        client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )
        client.open_text("edits.txt", "The capital of France is")
        assert "capital" in hover_text(await client.hover_at(uri, 0, 6))
        assert "Traceback" not in log_file.read_text(encoding="utf-8")
    finally:
        await stop(client)


async def test_a_request_before_initialize_is_refused_and_the_session_then_starts(
    offline_pack: None, hf_home: Path
) -> None:
    client = await start(None, hf_home, vscode_capabilities(), initialize=False)
    try:
        with pytest.raises(JsonRpcException, match="before initialize") as refused:
            await raw_request(client, types.TEXT_DOCUMENT_HOVER, HOVER_PARAMS)
        assert refused.value.code == types.ErrorCodes.ServerNotInitialized
        params = types.InitializeParams(capabilities=vscode_capabilities())
        await client.initialize_session(params)
        assert (await client.command("phi3.status"))["state"] in ("loading", "ready")
        with pytest.raises(JsonRpcException, match="initialize came again") as again:
            await client.initialize_async(params)
        assert again.value.code == types.ErrorCodes.InvalidRequest
    finally:
        await stop(client)


async def test_a_settings_change_before_initialized_loads_with_its_statuses_and_progress_shown(
    offline_pack: None, hf_home: Path, tiny_phi3_dir: Path
) -> None:
    client = await start(None, hf_home, vscode_capabilities(), initialize=False)
    try:
        client.capabilities = vscode_capabilities()  # what pytest-lsp checks requests against
        params = types.InitializeParams(capabilities=client.capabilities)
        await asyncio.wait_for(client.initialize_async(params), ANSWER_TIMEOUT)
        # A client that breaks the order: its change of model comes before its `initialized`,
        # which it sends once the model has loaded (the log says so).
        await client.change_settings({"model": str(tiny_phi3_dir), "int4Drafts": False})
        while not any(": Loaded " in message.message for message in client.log_messages):
            await client.wait_for_notification(types.WINDOW_LOG_MESSAGE)
        client.initialized(types.InitializedParams())
        ready = await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
        assert ready["state"] == "ready" and ready["model"] == str(tiny_phi3_dir)
        assert (await client.command("phi3.status"))["state"] == "ready"
        assert any(status["state"] == "loading" for status in client.statuses)  # the load's
        await client.wait_for_progress(
            lambda token, report: (
                isinstance(report, types.WorkDoneProgressEnd)
                and report.message is not None
                and report.message.endswith("is ready")
            )
        )
    finally:
        await stop(client)


async def test_after_shutdown_requests_are_refused_and_exit_ends_with_0(
    offline_pack: None, hf_home: Path, tmp_path: Path
) -> None:
    log_file = tmp_path / "server.log"
    client = await start(None, hf_home, vscode_capabilities(), log_file=log_file)
    await asyncio.wait_for(client.shutdown_async(None), ANSWER_TIMEOUT)
    # An editor closing its documents as it stops the server: nothing left to do, and
    # nothing to warn about.
    client.open_text("late.txt", "The capital of France is")
    with pytest.raises(JsonRpcException, match="after shutdown") as refused:
        await raw_request(client, types.TEXT_DOCUMENT_HOVER, HOVER_PARAMS)
    assert refused.value.code == types.ErrorCodes.InvalidRequest
    bad_position = {**HOVER_PARAMS, "position": {"line": 0, "character": -1}}
    with pytest.raises(JsonRpcException, match="do not fit the protocol"):
        await raw_request(client, types.TEXT_DOCUMENT_HOVER, bad_position)
    client.exit(None)
    assert await exit_code(client) == 0
    assert "WARNING" not in log_file.read_text(encoding="utf-8")


async def test_shutdown_while_a_command_waits_answers_both_and_exit_ends_with_0(
    offline_pack: None, hf_home: Path
) -> None:
    # An editor closed while "Show architecture" waits for the model's load.
    client = await start("smollm2-135m", hf_home, vscode_capabilities())
    waiting = asyncio.ensure_future(client.command("phi3.showArchitecture"))
    await asyncio.sleep(0.2)  # received: it waits for the load
    assert not waiting.done()
    await asyncio.wait_for(client.shutdown_async(None), ANSWER_TIMEOUT)
    with pytest.raises(JsonRpcException) as cancelled:
        await waiting
    assert cancelled.value.code == types.LSPErrorCodes.RequestCancelled
    client.exit(None)
    assert await exit_code(client) == 0


async def test_exit_without_shutdown_ends_with_1(offline_pack: None, hf_home: Path) -> None:
    client = await start(None, hf_home, vscode_capabilities())
    client.exit(None)
    assert await exit_code(client) == 1
