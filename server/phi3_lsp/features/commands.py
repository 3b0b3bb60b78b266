"""`workspace/executeCommand`: the architecture report, the status, the weights' read speed."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException

from phi3_lsp.model_host import FoundSource
from phi3_lsp.server import Phi3LanguageServer

if TYPE_CHECKING:
    from phi3_lsp.engine import ModelEngine  # imports torch
    from phi3_lsp.sources import ModelSource

logger = logging.getLogger(__name__)

SHOW_ARCHITECTURE = "phi3.showArchitecture"
STATUS = "phi3.status"
MEASURE_WEIGHT_READS = "phi3.measureWeightReads"


def register(server: Phi3LanguageServer) -> None:
    """Add the commands to `server`."""

    # Asked while a model loads (e.g. just after the editor started), these answer once it
    # has loaded rather than fail: the client shows its progress meanwhile, or cancels.
    # Asked after a settings change, they answer for the model it chose: each first waits
    # for the settings the server still pulls, if any.

    @server.command(SHOW_ARCHITECTURE)
    async def show_architecture(ls: Phi3LanguageServer) -> dict[str, Any]:
        await ls.settled_settings()
        # The architecture is known from the config: Phi-3-mini's is shown while its weights
        # download (minutes), not after.
        while True:
            await ls.load_settled(or_once=lambda: _config_found(ls) is not None)
            found = _config_found(ls)
            if found is None:
                break
            build = functools.partial(_architecture_before_weights_json, found.source)
            try:
                preview: dict[str, Any] | None = await ls.run_aside(build)
            except Exception:  # e.g. a config that cannot build: the load will say why
                logger.info(
                    "The architecture of %s waits for its load", found.source.spec, exc_info=True
                )
                preview = None
            if preview is not None and not _another_load_began(ls, found):
                return preview
            # The load says why the preview failed; another model chosen meanwhile has its own.
            await ls.load_settled(or_once=functools.partial(_another_load_began, ls, found))
            if not _another_load_began(ls, found):
                break
        engine = ls.host.engine if ls.host is not None else None
        if engine is None:
            raise JsonRpcException(
                message=_not_available(ls, "architecture to show"),
                code=types.LSPErrorCodes.RequestFailed,
            )
        # Built off the event loop: a repr of every module can take a moment on big models.
        report = asyncio.get_running_loop().run_in_executor(None, _architecture_json, engine)
        del engine  # a reload frees the model on its thread (see `ModelHost._free_dropped_engine`)
        return await report

    @server.command(MEASURE_WEIGHT_READS)
    async def measure_weight_reads(ls: Phi3LanguageServer) -> dict[str, object]:
        await ls.settled_settings()
        await ls.load_settled()
        reading = ls.host.read_weights() if ls.host is not None else None
        if reading is None:
            raise JsonRpcException(message=_no_weights(ls), code=types.LSPErrorCodes.RequestFailed)
        reads = await asyncio.wrap_future(reading)
        if reads is None:
            raise JsonRpcException(
                message="Another model was loaded before the weights could be read; try again.",
                code=types.LSPErrorCodes.ContentModified,
            )
        return reads.to_json()

    @server.command(STATUS)
    async def status(ls: Phi3LanguageServer) -> dict[str, object]:
        await ls.settled_settings()
        if ls.host is None:
            raise JsonRpcException(
                message="The server is not initialized yet.",
                code=types.ErrorCodes.ServerNotInitialized,
            )
        return ls.host.status.to_json()


def _config_found(ls: Phi3LanguageServer) -> FoundSource | None:
    """The loading model's source once found, where its weights' format keeps the module tree
    that its config builds (int4 replaces the linear layers as the weights load)."""
    loading = ls.host.loading_source if ls.host is not None else None
    if loading is None or loading.weights != "fp32":
        return None
    return loading


def _another_load_began(ls: Phi3LanguageServer, found: FoundSource) -> bool:
    """Whether a load has begun since the one that found `found`: another model, or format."""
    return ls.host is not None and ls.host.loads_begun != found.load


def _architecture_before_weights_json(source: ModelSource) -> dict[str, Any]:
    from phi3_lsp.engine import architecture_before_weights  # imports torch

    return architecture_before_weights(source).to_json()


def _architecture_json(engine: ModelEngine) -> dict[str, Any]:
    return engine.architecture().to_json()


def _no_weights(ls: Phi3LanguageServer) -> str:
    engine = ls.host.engine if ls.host is not None else None
    if engine is not None:
        # The hint says how to get a model with weights (the offline one, or a download).
        hint = engine.source.missing_weights_hint
        return " ".join(
            ["The model is loaded without its weights: there are none to read.", hint or ""]
        ).strip()
    return _not_available(ls, "weights to read")


def _not_available(ls: Phi3LanguageServer, missing: str) -> str:
    status = ls.host.status if ls.host is not None else None
    if status is not None and status.state == "error" and status.message:
        return f"No {missing}: {status.message}"
    return f"No {missing}: no model is loaded."
