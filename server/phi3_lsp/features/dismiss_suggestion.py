"""`phi3/dismissSuggestion`: the user turned down the suggestion shown in a document.

A suggestion is answered within the time budget and its continuation goes on in the
background (Phi-3-mini: ~10 s of both cores for 50 tokens). Once the user has turned it down
(Escape), nobody waits for the rest: this notification stops it within a layer, as a newer
request would. What was generated stays kept: asked again at that place, its complete lines
answer at once (where it has none, the model generates anew).
"""

from __future__ import annotations

import logging
from typing import Any

from lsprotocol import types

from phi3_lsp.json_values import as_plain
from phi3_lsp.request_rules import params_problems
from phi3_lsp.server import Phi3LanguageServer

DISMISS_SUGGESTION = "phi3/dismissSuggestion"

logger = logging.getLogger(__name__)


def register(server: Phi3LanguageServer) -> None:
    """Add the `phi3/dismissSuggestion` handler to `server`."""

    @server.feature(DISMISS_SUGGESTION)
    def dismiss_suggestion(ls: Phi3LanguageServer, params: Any) -> None:
        plain = as_plain(params)
        text_document = plain.get("textDocument") if isinstance(plain, dict) else None
        try:
            document = ls.converter.structure(text_document, types.TextDocumentIdentifier)
        except Exception as error:
            # A notification has no answer to carry the error: the log says it.
            logger.warning(
                "%s takes {textDocument: {uri}} (%s): ignored",
                DISMISS_SUGGESTION,
                params_problems(error),
            )
            return
        # Only the turned-down suggestion's generation: a newer request's would have replaced it.
        if ls.host is not None and ls.suggestions.is_generating_in(document.uri):
            logger.info("The suggestion was turned down: its continuation stops")
            ls.host.supersede()
