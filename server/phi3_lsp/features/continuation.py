"""The continuation at a cursor, shared by inline and classic completion."""

from __future__ import annotations

import logging

from lsprotocol import types

from phi3_lsp.completion import (
    build_prompt,
    has_text_to_continue,
    prompt_budget,
    tidy_continuation,
)
from phi3_lsp.features.documents import cursor_offset, open_document
from phi3_lsp.server import Phi3LanguageServer

logger = logging.getLogger(__name__)


async def continuation_at(ls: Phi3LanguageServer, uri: str, position: types.Position) -> str:
    """The text the model would type at `position` in `uri`; "" when there is nothing to add.

    Nothing is added when completions are off, no weights are loaded, the document is not
    open, the position is past its end, or a newer request took over.
    """
    host = ls.host
    if host is None or not ls.settings.inline_completions:
        return ""
    document = open_document(ls, uri)
    if document is None:
        return ""
    offset = cursor_offset(ls, document, position)
    if offset is None:
        return ""
    text_before_cursor = document.source[:offset]
    # Every new request makes the running one useless, answered from the cache or not.
    host.supersede()
    rest = ls.suggestions.rest_after_typing(uri, text_before_cursor)
    if rest is not None:
        return rest
    tokenizer, engine = host.tokenizer, host.engine
    if tokenizer is None or engine is None or not host.can_generate():
        return ""
    if not has_text_to_continue(text_before_cursor):
        return ""
    settings = ls.settings
    budget = prompt_budget(settings.context_tokens, engine.context_length, settings.max_new_tokens)
    prompt = build_prompt(tokenizer, text_before_cursor, budget)
    generation = await host.generate(
        prompt.ids, max_new_tokens=settings.max_new_tokens, cache_key=uri
    )
    if generation is None:
        return ""
    suggestion = tidy_continuation(generation.text)
    ls.suggestions.remember(uri, text_before_cursor, suggestion)
    logger.debug(
        "%d prompt tokens (%d reused), %d new in %.2f s",
        generation.prompt_tokens,
        generation.reused_prompt_tokens,
        len(generation.token_ids),
        generation.prefill_seconds + generation.decode_seconds,
    )
    return suggestion
