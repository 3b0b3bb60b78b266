"""The `phi3-lsp` command: the stdio language server by default, plus tools for people and scripts.

Heavy imports (torch, transformers, pygls) happen inside the chosen command, so that
`phi3-lsp --help` and the server's `initialize` answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from phi3_lsp import __version__
from phi3_lsp.logs import LEVELS

# The language server's own options, by `args` attribute: a command would ignore them.
SERVER_OPTIONS = {
    "stdio": "--stdio",
    "tcp": "--tcp",
    "ws": "--ws",
    "log_file": "--log-file",
    "log_level": "--log-level",
}


def build_parser() -> argparse.ArgumentParser:
    from phi3_lsp.launch import host_and_port

    parser = argparse.ArgumentParser(
        prog="phi3-lsp",
        description="A language server that holds a real transformer on the CPU. "
        "With no command it serves LSP over stdio.",
    )
    parser.add_argument("--version", action="version", version=f"phi3-lsp {__version__}")
    parser.add_argument(
        "--model", help="initial model spec: hub id, folder, .gguf file, or smollm2-135m"
    )
    transport = parser.add_mutually_exclusive_group()
    # Clients such as vscode-languageclient pass --stdio; stdio is the default anyway.
    transport.add_argument("--stdio", action="store_true", help="serve over stdio (the default)")
    transport.add_argument(
        "--tcp", metavar="HOST:PORT", type=host_and_port, help="serve over TCP instead of stdio"
    )
    transport.add_argument(
        "--ws", metavar="HOST:PORT", type=host_and_port, help="serve over WebSocket, not stdio"
    )
    # Checked after parsing (see `_check_server_options`): a command is refused before the
    # file is made.
    parser.add_argument("--log-file", help="write logs to this file instead of stderr")
    # No default here, so that one given to a command can be told from none.
    parser.add_argument(
        "--log-level", type=_log_level, help="DEBUG, INFO, WARNING or ERROR (default INFO)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    from phi3_lsp import cli, demo

    cli.register_commands(commands)
    demo.register_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from phi3_lsp import openmp

    openmp.configure_waiting(os.environ)  # before torch loads OpenMP
    # Texts are tokenized one at a time: the tokenizers thread pool would gain nothing, and
    # having used it makes any later fork print a warning.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_server_options(parser, args)
    if args.command is None:
        from phi3_lsp.launch import serve

        run = serve
    else:
        run = args.run
    try:
        exit_code: int = run(args)
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    except KeyboardInterrupt:  # Ctrl-C: the user stopped it, no traceback to read
        print(file=sys.stderr)
        return 130
    return exit_code


def _log_level(value: str) -> str:
    """A log level's name in capitals, from any case (`debug`, `Debug`)."""
    if value.upper() not in LEVELS:
        raise argparse.ArgumentTypeError(
            f"must be {', '.join(LEVELS[:-1])} or {LEVELS[-1]} (in any case), not {value!r}"
        )
    return value.upper()


def _check_server_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse server options given to a command (exit code 2), and a log file that cannot be
    written."""
    if args.command is not None:
        given = [
            option
            for name, option in SERVER_OPTIONS.items()
            if getattr(args, name) not in (None, False)
        ]
        if given:
            parser.error(
                f"`phi3-lsp {args.command}` does not start the language server: drop "
                f"{' and '.join(given)}, which only the server (phi3-lsp with no command) reads"
            )
    elif args.log_file is not None:
        try:
            with open(args.log_file, "a", encoding="utf-8"):
                pass
        except OSError as error:
            parser.error(f"argument --log-file: cannot write to {args.log_file}: {error.strerror}")


if __name__ == "__main__":
    sys.exit(main())
