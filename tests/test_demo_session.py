"""The demo's session with a server whose process ends under it: told at once, with its log."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from phi3_lsp.demo_session import ServerEnded, demo
from phi3_lsp.server import STATUS_NOTIFICATION

# A server that logs a line and exits with code 3 once it is initialized ("load"), or once it is
# asked for a completion after saying its model is ready ("demo").
ENDING_SERVER = f"""
import os, sys
from lsprotocol import types
from pygls.lsp.server import LanguageServer

server = LanguageServer("ending-server", "0")


@server.feature(types.INITIALIZED)
def initialized(ls: LanguageServer, params: types.InitializedParams) -> None:
    print("loading the model", file=sys.stderr, flush=True)
    if sys.argv[1] == "load":
        os._exit(3)
    ls.protocol.notify({STATUS_NOTIFICATION!r}, {{"state": "ready"}})


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION)
def complete(ls: LanguageServer, params: types.InlineCompletionParams) -> None:
    print("completing", file=sys.stderr, flush=True)
    os._exit(3)


server.start_io()
"""


@pytest.mark.parametrize(
    ("ends", "logged", "when"),
    [
        ("load", "loading the model\n", "while loading the-model"),
        ("demo", "loading the model\ncompleting\n", "during the demo"),
    ],
)
async def test_a_server_that_exits_ends_the_demo_at_once_after_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ends: str, logged: str, when: str
) -> None:
    script = tmp_path / "ending_server.py"
    script.write_text(ENDING_SERVER)
    with pytest.raises(ServerEnded) as ended:
        await demo([sys.executable, str(script), ends], "the-model", timeout=60, out=io.StringIO())
    assert str(ended.value) == f"The server exited with code 3 {when}: its log is above."
    assert capsys.readouterr().err == logged
