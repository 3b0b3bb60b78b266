"""The stdio server answers `initialize` itself before importing pygls, as pygls would."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phi3_lsp.handshake import (
    AnswerDropper,
    ReplayingReader,
    answer_initialize,
    initialize_response,
)
from phi3_lsp.message_frames import frame, read_message

CLIENT_PROFILES: dict[str, dict[str, Any]] = {
    "no general capabilities": {},
    "prefers utf-8": {"general": {"positionEncodings": ["utf-8", "utf-16"]}},
    "utf-32 only": {"general": {"positionEncodings": ["utf-32"]}},
    "unknown encodings only": {"general": {"positionEncodings": ["utf-7"]}},
    "vscode-like": {
        "general": {"positionEncodings": ["utf-16"]},
        "textDocument": {"synchronization": {"willSave": True, "willSaveWaitUntil": True}},
        "workspace": {"configuration": True, "workspaceFolders": True},
        "window": {"workDoneProgress": True},
        "notebookDocument": {"synchronization": {"dynamicRegistration": True}},
    },
}


def _initialize_request(capabilities: dict[str, Any], request_id: int | str = 0) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {"processId": None, "rootUri": None, "capabilities": capabilities},
    }


async def _pygls_answer(request: dict[str, Any]) -> dict[str, Any]:
    """What the real server's pygls protocol answers to `request`."""
    from phi3_lsp.server import build_server

    server = build_server()
    written: list[bytes] = []
    server.protocol.set_writer(
        type("Writer", (), {"write": lambda _, data: written.append(data)})()
    )
    server.protocol.handle_message(
        json.loads(json.dumps(request), object_hook=server.protocol.structure_message)
    )
    while not written:
        await asyncio.sleep(0.01)
    server.close()
    answer: dict[str, Any] = json.loads(written[0].partition(b"\r\n\r\n")[2])
    return answer


@pytest.mark.parametrize("profile", list(CLIENT_PROFILES))
def test_the_early_answer_is_the_one_pygls_gives(profile: str) -> None:
    # If a feature is added or removed, pygls' answer changes and this test names the gap.
    request = _initialize_request(CLIENT_PROFILES[profile])
    assert initialize_response(request) == asyncio.run(asyncio.wait_for(_pygls_answer(request), 10))


def test_initialize_is_answered_without_importing_the_protocol_libraries() -> None:
    # All that `phi3-lsp` runs before its answer: the command line, the launch, logging.
    script = (
        "import io, sys\n"
        "import phi3_lsp.__main__, phi3_lsp.launch\n"
        "from phi3_lsp.logs import setup_logging\n"
        "setup_logging()\n"
        "from phi3_lsp.handshake import answer_initialize\n"
        "from phi3_lsp.message_frames import frame\n"
        f"request = frame({_initialize_request({}, 'init-1')!r})\n"
        "out = io.BytesIO()\n"
        "answer_initialize(io.BytesIO(request), out)\n"
        "print(out.getvalue().partition(b'\\r\\n\\r\\n')[2].decode())\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pygls', 'lsprotocol', 'attrs', "
        "'cattrs'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    answer, imported = result.stdout.splitlines()
    assert json.loads(answer)["id"] == "init-1"
    assert json.loads(answer)["result"]["capabilities"]["hoverProvider"] is True
    assert imported == "[]"


def test_pygls_reads_the_first_message_again_then_the_rest() -> None:
    first = frame(_initialize_request({}))
    second = frame({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    stdin = io.BytesIO(first + second)
    stdout = io.BytesIO()
    reader, _ = answer_initialize(stdin, stdout)
    assert read_message(reader) == first
    assert read_message(reader) == second
    assert read_message(reader) == b""


@pytest.mark.parametrize(
    "first",
    [
        {"jsonrpc": "2.0", "id": 3, "method": "shutdown"},
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"processId": None}},
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"processId": "12", "capabilities": {}},
        },
    ],
)
def test_a_first_message_that_is_not_a_valid_initialize_is_passed_on_unanswered(
    first: dict[str, Any],
) -> None:
    # A client that breaks the protocol gets pygls' own answer, whatever that is.
    message = frame(first)
    stdout = io.BytesIO()
    reader, writer = answer_initialize(io.BytesIO(message), stdout)
    assert stdout.getvalue() == b""
    assert writer is stdout
    assert read_message(reader) == message


def test_a_body_cut_short_reads_on_from_the_stream() -> None:
    reader = ReplayingReader(b'Content-Length: 10\r\n\r\n{"a"', io.BytesIO(b": 12}rest"))
    assert reader.readline() == b"Content-Length: 10\r\n"
    assert reader.readline() == b"\r\n"
    assert reader.read(10) == b'{"a": 12}r'
    assert reader.read(-1) == b"est"


def test_only_pygls_answer_to_the_answered_request_is_dropped() -> None:
    stdout = io.BytesIO()
    writer = AnswerDropper(stdout, request_id=0)
    log = frame({"jsonrpc": "2.0", "method": "window/logMessage", "params": {"type": 3}})
    server_request = frame({"jsonrpc": "2.0", "id": 0, "method": "window/workDoneProgress/create"})
    later_answer = frame({"jsonrpc": "2.0", "id": 0, "result": None})
    for message in (
        log,
        server_request,
        frame(initialize_response(_initialize_request({}))),
        later_answer,
    ):
        writer.write(message)
    assert stdout.getvalue() == log + server_request + later_answer


def test_the_server_answers_initialize_once_and_then_serves(tmp_path: Path) -> None:
    messages = [
        _initialize_request({"general": {"positionEncodings": ["utf-8"]}}),
        {"jsonrpc": "2.0", "method": "initialized", "params": {}},
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "workspace/executeCommand",
            "params": {"command": "phi3.status"},
        },
        {"jsonrpc": "2.0", "id": 2, "method": "shutdown"},
        {"jsonrpc": "2.0", "method": "exit"},
    ]
    # A model that cannot load: the session itself is under test, not the model.
    command = [sys.executable, "-m", "phi3_lsp", "--model", str(tmp_path / "no-model")]
    server = subprocess.run(
        command,
        input=b"".join(frame(message) for message in messages),
        capture_output=True,
        timeout=60,
    )
    assert server.returncode == 0
    stream = io.BytesIO(server.stdout)
    answers = [
        json.loads(body.partition(b"\r\n\r\n")[2])
        for body in iter(lambda: read_message(stream), b"")
    ]
    by_id = [answer for answer in answers if "method" not in answer]
    assert [answer["id"] for answer in by_id] == [0, 1, 2]
    assert by_id[0]["result"]["capabilities"]["positionEncoding"] == "utf-8"
    assert by_id[1]["result"]["model"] == str(tmp_path / "no-model")
