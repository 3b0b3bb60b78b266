"""The `phi3-lsp` command line: the language server is the default, as editors start it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi3_lsp.__main__ import build_parser


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
    assert "address already in use" in server.stderr


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
            for _ in range(1200):
                if listens(port):
                    break
                time.sleep(0.05)
            assert listens(port)
            server.send_signal(signal.SIGINT)
            _, stderr = server.communicate(timeout=60)
        finally:
            server.kill()  # a server the Ctrl-C did not stop fails the test, not hangs it
    assert server.returncode == 130
    assert "Traceback" not in stderr


def listens(port: int) -> bool:
    """Whether a socket of this machine listens on TCP `port` (Linux's table of them)."""
    listening = "0A"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == listening and int(local.split(":")[1], 16) == port:
            return True
    return False
