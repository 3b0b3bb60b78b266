"""`workspace/executeCommand`: the architecture report and the status."""

from __future__ import annotations

import asyncio
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException

from phi3_lsp.server import Phi3LanguageServer

SHOW_ARCHITECTURE = "phi3.showArchitecture"
STATUS = "phi3.status"


def register(server: Phi3LanguageServer) -> None:
    """Add the commands to `server`."""

    @server.command(SHOW_ARCHITECTURE)
    async def show_architecture(ls: Phi3LanguageServer) -> dict[str, Any]:
        engine = ls.host.engine if ls.host is not None else None
        if engine is None:
            raise JsonRpcException(
                message=_not_available(ls), code=types.LSPErrorCodes.RequestFailed
            )
        # Built off the event loop: a repr of every module can take a moment on big models.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: engine.architecture().to_json())

    @server.command(STATUS)
    def status(ls: Phi3LanguageServer) -> dict[str, object]:
        if ls.host is None:
            raise JsonRpcException(
                message="The server is not initialized yet.",
                code=types.ErrorCodes.ServerNotInitialized,
            )
        return ls.host.status.to_json()


def _not_available(ls: Phi3LanguageServer) -> str:
    status = ls.host.status if ls.host is not None else None
    if status is not None and status.state == "error" and status.message:
        return f"No architecture to show: {status.message}"
    return "The model is still loading; the architecture is available once it has loaded."
