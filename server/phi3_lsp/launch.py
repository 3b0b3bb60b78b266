"""Starting the server on stdio (the default), TCP or WebSocket.

On stdio, `initialize` is answered before pygls is imported (see `handshake`). On stdio and
TCP, messages are read on a thread of their own (see `message_reader`).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from typing import BinaryIO

from phi3_lsp.handshake import answer_initialize
from phi3_lsp.logs import setup_logging


def serve(args: argparse.Namespace) -> int:
    """Run the server until the client says exit."""
    setup_logging(args.log_level or "INFO", args.log_file)
    if args.tcp or args.ws:
        stdin = stdout = None
    else:
        stdin, stdout = answer_initialize(sys.stdin.buffer, _protocol_stdout())
    # pygls and lsprotocol make ~50,000 objects that live as long as the server: without the
    # cycle collector's passes over them as they are made, they import 0.05-0.2 s faster.
    gc.disable()
    from phi3_lsp.server import build_server  # imports pygls and lsprotocol

    gc.freeze()  # out of later collections' way (the first load freezes its own objects too)
    gc.enable()
    server = build_server(args.model)
    try:
        try:
            if args.tcp:
                server.start_tcp(*args.tcp)
            elif args.ws:
                server.start_ws(*args.ws)
            else:
                server.start_io(stdin, stdout)
        finally:
            idle = server.close()
    except KeyboardInterrupt:  # Ctrl-C where the server was started by hand
        exit_code = 130
    except OSError as error:
        if not (args.tcp or args.ws):
            raise
        # The address is taken, or its host unknown: the user's to fix, no traceback to read.
        host, port = args.tcp or args.ws
        logging.getLogger(__name__).error("Could not listen on %s:%d: %s", host, port, error)
        exit_code = 1
    else:
        exit_code = server.exit_code
    if not idle:
        # A model load or a read of stdin is still running and cannot be interrupted: leave
        # without unwinding the interpreter under it, which would abort the process.
        logging.shutdown()
        os._exit(exit_code)
    return exit_code


def _protocol_stdout() -> BinaryIO:
    """A private handle on stdout for LSP; file descriptor 1 itself then points at stderr.

    Libraries that print (or C code that writes to fd 1) would corrupt the JSON-RPC stream;
    this way their output lands in the log instead.
    """
    sys.stdout.flush()
    # Buffered: pygls flushes after each message, and a buffered writer writes it all.
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def host_and_port(value: str) -> tuple[str, int]:
    """`--tcp` and `--ws`: "HOST:PORT" (or ":PORT", on 127.0.0.1) as argparse reads it."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT, e.g. 127.0.0.1:2087, not {value!r}")
    return host or "127.0.0.1", int(port)
