"""The continuation at a cursor, shared by inline and classic completion, and the reading of
its prompt ahead of a request for it (`phi3/readAtCursor`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lsprotocol import types

from phi3_lsp.completion import (
    Prompt,
    build_prompt,
    fit_to_line,
    has_text_to_continue,
    in_middle_of_line,
    new_token_limit,
    prompt_budget,
    prompt_text_start,
    tidy_continuation,
)
from phi3_lsp.features.documents import cursor_offset, open_document
from phi3_lsp.model_host import ModelHost
from phi3_lsp.positions import LineIndex
from phi3_lsp.selected_item import AppliedItem
from phi3_lsp.server import Phi3LanguageServer
from phi3_lsp.settings import Settings
from phi3_lsp.suggestions import LiveSuggestion

if TYPE_CHECKING:
    # For annotations only: they import torch and the tokenizers library.
    from phi3_lsp.generation import Generation, PromptRead
    from phi3_lsp.tokens import DocumentTokenizer

logger = logging.getLogger(__name__)


async def continuation_at(
    ls: Phi3LanguageServer,
    uri: str,
    position: types.Position,
    applied: AppliedItem | None = None,
) -> str:
    """The text the model would type at `position` in `uri`; "" when there is nothing to add.

    `applied`: the item selected in the client's completion list, applied to the document's
    current text (read before this is called, as `position` is): the text is then the one the
    model would type after the item, in the text with the item in place.

    Nothing is added when completions are off (or were turned off while this waited), no
    weights are loaded, the document is not open (or was closed while this waited, even if
    opened again), the position is past its end, or a newer request took over.
    """
    text = await _continuation_at(ls, uri, position, applied)
    # Turned off meanwhile, e.g. while waiting on the last suggestion, which the change stopped
    # (its complete lines would be the answer): the user wants no suggestion shown by now.
    return text if ls.settings.inline_completions else ""


async def _continuation_at(
    ls: Phi3LanguageServer, uri: str, position: types.Position, applied: AppliedItem | None
) -> str:
    # The text first: it must be the version the request was made on, which an edit coming
    # while settings are read would replace.
    cursor = cursor_in(ls, uri, position)
    if cursor is not None and applied is not None:
        cursor = applied.lines, applied.cursor
    document = open_document(ls, uri)
    settings = await ls.settled_settings()
    host = ls.host
    if host is None or not settings.inline_completions or cursor is None:
        return ""
    if open_document(ls, uri) is not document:
        return ""  # closed while settings were read: answered as a document not open
    place = _Place.at(*cursor, settings)
    budget = settings.answer_budget_ms / 1000 or None
    # In the middle of a line only the first line is shown (see `fit_to_line`): no more to make.
    one_line = in_middle_of_line(place.rest_of_line)
    # Typing through the last suggestion (or asking again at its place) is answered from it,
    # and leaves its generation running: it is the one that serves this request.
    through = ls.suggestions.typed_through(
        uri, place.text_before_cursor, start=place.start, one_line=one_line
    )
    if through is not None:
        rest = await through.rest(budget)
        if rest is not None:
            return tidy_continuation(fit_to_line(rest, place.rest_of_line))
    tokenizer, context_length = host.tokenizer, host.context_length
    if (
        tokenizer is None
        or context_length is None
        or not host.can_generate()
        or not has_text_to_continue(place.text_before_cursor)
    ):
        host.supersede()  # any other request makes the running generation useless
        return ""
    suggestion = LiveSuggestion(asyncio.get_running_loop())
    ls.suggestions.remember(
        uri, place.text_before_cursor, suggestion, start=place.start, one_line=one_line
    )
    try:
        prompt = await _prompt(tokenizer, place, settings, context_length)
    except BaseException:
        # Cancelled (the user typed on) or failed before a generation could finish it: asking
        # again here would otherwise wait on it for good.
        suggestion.finish(stopped=True)
        raise
    if not ls.suggestions.is_current(suggestion) or open_document(ls, uri) is not document:
        # A newer request took over while the prompt was built, or the document was closed
        # (perhaps opened again: its keys and values are freed, a generation now would keep
        # them again).
        suggestion.finish(stopped=True)
        return ""
    limit = new_token_limit(settings.max_new_tokens, context_length, len(prompt.ids))
    # It stops the running generation, which may first finish a prompt pass this one needs.
    generation = asyncio.ensure_future(
        _generate_into(host, suggestion, prompt.ids, limit, uri, one_line)
    )
    generation.add_done_callback(_log_failure)
    try:
        # Show what is there once the budget is spent; the rest arrives in the background.
        await suggestion.settle(0, budget)
    except asyncio.CancelledError:
        generation.cancel()  # the request was cancelled: stop the model within a layer
        raise
    if generation.done() and generation.result() is False:
        return ""  # superseded: a newer request took over
    return tidy_continuation(fit_to_line(suggestion.shown(), place.rest_of_line))


async def read_at(ls: Phi3LanguageServer, uri: str, position: types.Position) -> PromptRead | None:
    """Read the prompt a completion at `position` in `uri` would have, so that the suggestion
    there need not wait for it; None when nothing was read.

    Nothing is read when completions or reading at the cursor are off, no weights are loaded,
    the document is not open (or was closed while this waited), the position is past its end,
    there is no text before it, or a completion is running (see `ModelHost.read_prompt`).
    """
    cursor = cursor_in(ls, uri, position)  # first, as in `continuation_at`
    document = open_document(ls, uri)
    settings = await ls.settled_settings()
    host = ls.host
    if host is None or not settings.inline_completions or not settings.read_at_cursor:
        return None
    tokenizer, context_length = host.tokenizer, host.context_length
    if cursor is None or tokenizer is None or context_length is None or not host.can_generate():
        return None
    place = _Place.at(*cursor, settings)
    if not has_text_to_continue(place.text_before_cursor):
        return None
    prompt = await _prompt(tokenizer, place, settings, context_length)
    if open_document(ls, uri) is not document:
        # Closed (and perhaps opened again) while this waited: the keys and values of the text
        # it read are freed, not to be kept.
        return None
    return await host.read_prompt(prompt.ids, cache_key=uri)


def cursor_in(
    ls: Phi3LanguageServer, uri: str, position: types.Position
) -> tuple[LineIndex, int] | None:
    """The text of `uri` (its line index, which an edit replaces but never changes) and the
    offset of `position` in it; None when the document is not open or the position is past its
    end."""
    document = open_document(ls, uri)
    if document is None:
        return None
    offset = cursor_offset(ls, document, position)
    return None if offset is None else (document.line_index, offset)


@dataclass(frozen=True)
class _Place:
    """The text around a cursor that a completion reads."""

    text_before_cursor: str
    """The end of the text before the cursor, as much as a prompt can use."""
    start: int
    """Where `text_before_cursor` begins in the document."""
    rest_of_line: str

    @classmethod
    def at(cls, lines: LineIndex, offset: int, settings: Settings) -> _Place:
        """The place at `offset` in `lines`: the text a prompt of `settings` can use (its
        budget is at most contextTokens) and the rest of the line."""
        start = prompt_text_start(offset, settings.context_tokens)
        return cls(lines.blocks[start:offset], start, lines.line_after(offset))


async def _prompt(
    tokenizer: DocumentTokenizer, place: _Place, settings: Settings, model_context: int
) -> Prompt:
    """The prompt of a completion at `place` (see `build_prompt`).

    Tokenizing up to contextTokens of text takes tens of milliseconds: off the event loop, so
    that hovers and cancellations are not kept waiting.
    """
    budget = prompt_budget(settings.context_tokens, model_context, settings.max_new_tokens)
    return await asyncio.to_thread(
        build_prompt, tokenizer, place.text_before_cursor, budget, place.start
    )


async def _generate_into(
    host: ModelHost,
    suggestion: LiveSuggestion,
    prompt_ids: list[int],
    limit: int,
    uri: str,
    one_line: bool,
) -> bool:
    """Run the generation, streaming into `suggestion`; False when it was superseded."""

    def mark_finished(generation: Generation | None) -> None:
        # No generation: it was stopped (superseded, cancelled) or failed, wherever it was.
        suggestion.mark_finished(
            generation.text if generation is not None else None, stopped=generation is None
        )

    generation = None
    try:
        generation = await host.generate(
            prompt_ids,
            max_new_tokens=limit,
            cache_key=uri,
            on_text=suggestion.append,
            # Before the status says ready: a request made on seeing it finds the suggestion
            # whole. Its waiters wake below, after the status is out.
            on_end=mark_finished,
            one_line=one_line,
        )
    finally:
        mark_finished(generation)  # if it never ran, or this task was cancelled: the first holds
        suggestion.finish()
    if generation is None:
        return False
    logger.debug(
        "%d prompt tokens (%d reused), %d new in %.2f s",
        generation.prompt_tokens,
        generation.reused_prompt_tokens,
        len(generation.token_ids),
        generation.prefill_seconds + generation.decode_seconds,
    )
    return True


def _log_failure(generation: asyncio.Future[bool]) -> None:
    """Report a generation that failed after its request was answered."""
    if not generation.cancelled() and generation.exception() is not None:
        logger.error("A background generation failed", exc_info=generation.exception())
