"""Reading stdin for pygls on a thread of its own: every byte in order, and a clean exit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from phi3_lsp.message_frames import frame, read_message
from phi3_lsp.message_reader import MessageReader

MESSAGES: list[dict[str, Any]] = [
    {"jsonrpc": "2.0", "id": 1, "method": "textDocument/hover", "params": {"n": "é" * 3000}},
    {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 1}},
    {"jsonrpc": "2.0", "method": "exit"},
]


def _write_in_pieces(fd: int, data: bytes, piece: int) -> None:
    """Write `data` a few bytes at a time, so that headers and bodies arrive split, then close."""
    with os.fdopen(fd, "wb", buffering=0) as pipe:
        for start in range(0, len(data), piece):
            pipe.write(data[start : start + piece])
            time.sleep(0.0005)


async def _read_as_pygls_does(reader: MessageReader) -> tuple[list[bytes], bytes]:
    """Bodies read the way pygls' loop reads them (header lines, then the body); the last
    read at the end of the stream."""
    bodies: list[bytes] = []
    length = 0
    while header := await reader.readline():
        if header.lower().startswith(b"content-length:"):
            length = int(header.split(b":")[1])
        elif not header.strip():
            bodies.append(await reader.readexactly(length))
    return bodies, await reader.readexactly(1)


def _read_pipe(data: bytes, piece: int) -> tuple[list[bytes], bytes, bool]:
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=_write_in_pieces, args=(write_end, data, piece))
    writer.start()

    async def read() -> tuple[list[bytes], bytes, bool]:
        with os.fdopen(read_end, "rb") as stream:
            reader = MessageReader(stream, asyncio.get_running_loop())
            reader.start()
            bodies, after_end = await asyncio.wait_for(_read_as_pygls_does(reader), 30)
            await asyncio.sleep(0.1)  # the thread leaves once it has handed over the end
            return bodies, after_end, reader.reading

    try:
        return asyncio.run(read())
    finally:
        writer.join()


def test_messages_arrive_whole_and_in_order_however_the_pipe_splits_them() -> None:
    data = b"".join(frame(message) for message in MESSAGES)
    for piece in (7, 4096):
        bodies, after_end, reading = _read_pipe(data, piece)
        assert [json.loads(body) for body in bodies] == MESSAGES
        assert after_end == b""
        assert not reading


def test_a_body_cut_short_by_the_end_of_the_stream_is_read_as_far_as_it_goes() -> None:
    whole = frame(MESSAGES[0])
    bodies, _, _ = _read_pipe(whole[:-10], 4096)
    assert bodies == [whole.partition(b"\r\n\r\n")[2][:-10]]


def _send(server: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert server.stdin is not None
    server.stdin.write(frame(message))
    server.stdin.flush()


def test_the_server_exits_on_exit_while_the_client_keeps_stdin_open(tmp_path: Path) -> None:
    # An editor may wait for the process to end before it closes the pipe; the reader's
    # pending read must neither keep the process alive nor abort it at exit.
    server = _start_and_initialize(str(tmp_path / "no-model"))
    returncode, stderr = _exit(server)
    assert returncode == 0
    assert b"Fatal Python error" not in stderr


def test_exit_during_a_model_load_ends_the_server_without_finishing_the_load(
    tiny_phi3_dir: Path,
) -> None:
    # An editor that restarts the server while a model loads must not have the old process
    # load on beside the new one: nothing the load makes is of use once the server is gone.
    # (A tiny model: its load would end within seconds, if the server waited for it.)
    server = _start_and_initialize(str(tiny_phi3_dir))
    try:
        _send(server, {"jsonrpc": "2.0", "method": "initialized", "params": {}})
        while "Starting torch" not in str(_status(server).get("message")):
            pass  # the load is past the tokenizer and imports torch now, for seconds
    finally:
        returncode, stderr = _exit(server)
    assert returncode == 0
    assert b"Loaded " not in stderr, stderr.decode(errors="replace")[-2000:]
    assert b"Fatal Python error" not in stderr


def _start_and_initialize(model: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "phi3_lsp", "--model", model]
    # With the fault handler on, SIGABRT makes a server that hangs write every thread's stack.
    environment = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    server = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    )
    params: dict[str, Any] = {"processId": None, "rootUri": None, "capabilities": {}}
    _send(server, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
    assert server.stdout is not None
    answer = read_message(cast(BinaryIO, server.stdout))
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["id"] == 0
    return server


def _exit(server: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    """Shut the server down and tell it to exit; its return code and what it wrote to stderr.

    Both pipes are drained meanwhile, as an editor does: a server blocked on a full pipe is the
    test's doing, not the server's. One that has not exited after 60 s fails the test with its
    whole log, ending in every thread's stack.
    """
    _send(server, {"jsonrpc": "2.0", "id": 1, "method": "shutdown"})
    _send(server, {"jsonrpc": "2.0", "method": "exit"})
    try:
        _, stderr = server.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        server.send_signal(signal.SIGABRT)
        _, stderr = server.communicate()
        pytest.fail(f"no exit within 60 s; the log:\n{stderr.decode(errors='replace')}")
    return server.returncode, stderr


def _status(server: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The parameters of the next `phi3/status` notification the server sends."""
    assert server.stdout is not None
    while True:
        message = json.loads(read_message(cast(BinaryIO, server.stdout)).partition(b"\r\n\r\n")[2])
        if message.get("method") == "phi3/status":
            params: dict[str, Any] = message["params"]
            return params
