"""`phi3-lsp demo`: a real LSP session against the server, printed for a person to read.

It starts `python -P -m phi3_lsp` as a subprocess and talks to it with pygls' LanguageClient over
stdio, exactly as an editor would (see `demo_session`). Registering the command imports
nothing heavy: the server's own start builds this parser too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from typing import Any

DEMO_MODEL = "smollm2-135m"


def register_command(subparsers: Any) -> None:
    """Add `demo` to the `phi3-lsp` command line."""
    parser = subparsers.add_parser(
        "demo",
        help="run a real LSP session against the server and print each answer",
        description="Start the server as a subprocess and drive it over LSP: initialize, "
        "inline completion, hover, the architecture report and a timed read of the weights, "
        "each with its latency.",
    )
    parser.add_argument(
        "--model",
        dest="demo_model",
        default=None,
        help=f"model spec for the server (default {DEMO_MODEL}, fetched into the cache if needed)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        help="seconds to wait for the model (default 600)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every step answered."""
    logging.getLogger("pygls").setLevel(logging.ERROR)
    given = args.demo_model if args.demo_model is not None else getattr(args, "model", None)
    model = DEMO_MODEL if given is None else given
    # The demo prints what the server answers; the server's own log stays at warnings.
    # -P, as editors should start it: the folder the demo runs in is not on the module path.
    command = [sys.executable, "-P", "-m", "phi3_lsp", "--model", model, "--log-level", "WARNING"]
    from phi3_lsp.cli import fail
    from phi3_lsp.demo_session import ModelLoadFailed, ServerEnded, demo  # pygls, lsprotocol
    from phi3_lsp.sources import SPEC_HELP

    if not model.strip():  # given empty, not left out: refused as the other commands do
        return fail(f"The model spec is empty — {SPEC_HELP}.")
    try:
        return asyncio.run(demo(command, model, timeout=args.timeout, out=sys.stdout))
    except (ModelLoadFailed, ServerEnded) as error:  # one line, as the other commands end
        return fail(str(error))


def _seconds(value: str) -> float:
    """A positive number of seconds (argparse's `float` takes -5, 0 and nan)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {value!r}")
    return seconds
