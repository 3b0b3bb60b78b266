"""`phi3/readAtCursor`: read the prompt at a resting cursor before a completion asks for it.

The first suggestion at a new place waits for the model to read the text before the cursor
(SmolLM2 on 2 cores: ~2.7 s for 1,500 tokens; Phi-3-mini: over a minute). A client sends this
request when the cursor rests, and the model reads that text meanwhile, at low priority,
stopped by any completion; the completion then reads only what was typed since. The result
says what is now kept: `{"promptTokens", "cachedTokens", "readTokens"}`, or null when nothing
was read.
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from phi3_lsp.features.continuation import read_at
from phi3_lsp.json_values import as_plain
from phi3_lsp.request_rules import params_problems
from phi3_lsp.server import Phi3LanguageServer

READ_AT_CURSOR = "phi3/readAtCursor"


def register(server: Phi3LanguageServer) -> None:
    """Add the `phi3/readAtCursor` handler to `server`."""

    @server.feature(READ_AT_CURSOR)
    async def read_at_cursor(ls: Phi3LanguageServer, params: Any) -> dict[str, int] | None:
        try:
            place = ls.converter.structure(as_plain(params), types.TextDocumentPositionParams)
        except Exception as error:
            raise JsonRpcInvalidParams(
                f"{READ_AT_CURSOR} takes a text document and a position ({params_problems(error)})"
            ) from error
        read = await read_at(ls, place.text_document.uri, place.position)
        if read is None:
            return None
        return {
            "promptTokens": read.prompt_tokens,
            "cachedTokens": read.cached_tokens,
            "readTokens": read.read_tokens,
        }
