"""The `phi3-lsp` command line: the language server is the default, as editors start it."""

from __future__ import annotations

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
