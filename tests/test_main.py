"""The `phi3-lsp` command line: the language server is the default, as editors start it."""

from __future__ import annotations

import subprocess
import sys

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
