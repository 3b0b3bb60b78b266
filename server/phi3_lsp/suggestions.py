"""Suggestions that keep growing after they are shown, and typing through them without the model.

A completion is answered with what the model has generated within a time budget while the model
thread goes on to the full continuation. The suggestion is kept: when the user accepts part of
it or types its first characters, the next request is answered from it at once, with whatever
the model has added in the meantime. No LSP and no torch here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from phi3_lsp.completion import complete_lines, lines_to_show


class LiveSuggestion:
    """The text of one continuation, appended to by the model thread, read on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._text = ""
        self._finished = False
        self._stopped = False
        self._changed = asyncio.Event()
        # Waits that look at the text: only these need a wake-up for every appended piece.
        # Waking the event loop costs the model thread ~1.5 ms a token (GIL and a pipe write).
        self._text_watchers = 0

    @classmethod
    def complete(cls, text: str) -> LiveSuggestion:
        """A suggestion that is already whole."""
        suggestion = cls()
        suggestion._text, suggestion._finished = text, True
        return suggestion

    @property
    def text(self) -> str:
        """The text so far."""
        return self._text

    @property
    def finished(self) -> bool:
        """True once the model has stopped adding to it (done, limit reached, or stopped)."""
        return self._finished

    @property
    def stopped(self) -> bool:
        """True when its generation was stopped before it ended (cancelled, superseded, failed)."""
        return self._stopped

    def shown(self, start: int = 0) -> str:
        """What to show of the text after `start` characters: whole lines unless it ended.

        A stopped generation was cut wherever the stop found it, often inside a word: only its
        complete lines are shown, "" when it has none.
        """
        finished = self._finished  # first: once finished, the text and `stopped` no longer change
        if finished and self._stopped:
            return complete_lines(self._text[start:])
        return lines_to_show(self._text[start:], finished=finished)

    def append(self, piece: str) -> None:
        """Add generated text; may be called from any thread."""
        self._text += piece  # before the check below: a watcher added meanwhile sees the text
        if self._text_watchers:
            self._notify()

    def finish(self, final_text: str | None = None, *, stopped: bool = False) -> None:
        """Mark it whole (see `mark_finished`) and wake what waits for it; from any thread."""
        self.mark_finished(final_text, stopped=stopped)
        self._notify()

    def mark_finished(self, final_text: str | None = None, *, stopped: bool = False) -> None:
        """Mark it whole, optionally with the generation's final text, without waking what
        waits for it; from any thread. Only the first mark counts: once finished, the text and
        `stopped` no longer change.

        `stopped`: the generation was stopped before it ended, so the text may end anywhere.
        """
        if self._finished:
            return
        if final_text is not None:
            self._text = final_text
        self._stopped = stopped
        self._finished = True

    async def wait(self, ready: Callable[[str], bool], timeout: float | None) -> None:
        """Return once it is finished, `ready(text)` holds, or `timeout` seconds have passed."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        watches_text = ready is not _never
        self._text_watchers += watches_text
        try:
            while not self._finished and not ready(self._text):
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return
                # Cleared on the loop thread between the check and the wait: a change made by
                # the model thread in between is delivered later through call_soon_threadsafe.
                self._changed.clear()
                try:
                    # Not asyncio.wait_for, which can swallow a cancel on Python 3.11.
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()
                except TimeoutError:
                    return
        finally:
            self._text_watchers -= watches_text

    async def settle(self, shown_from: int, budget: float | None) -> None:
        """Wait until the text after `shown_from` characters is worth answering with.

        With no budget: the whole continuation. Otherwise at once if there is visible text
        already, else as soon as its first line is complete, else what the model has added when
        the budget is spent (at least one visible character, unless the model stops with
        nothing more).
        """

        def has_more(text: str) -> bool:
            return bool(text[shown_from:].strip())

        def has_a_line(text: str) -> bool:
            # The first line will not change any more.
            return bool(complete_lines(text[shown_from:]))

        if budget is None:
            await self.wait(_never, None)
        elif not has_more(self._text):
            await self.wait(has_a_line, budget)
            await self.wait(has_more, None)

    def _notify(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._changed.set)


@dataclass(frozen=True)
class TypedThrough:
    """A request that the last suggestion answers: the user typed `typed`, its first characters."""

    suggestion: LiveSuggestion
    typed: str

    async def rest(self, budget: float | None) -> str | None:
        """The suggestion after what was typed, settled and shown as a fresh answer would be.

        None when the suggestion turned out to differ from what was typed, when nothing but
        whitespace is left of it, or when its generation was stopped with no complete line
        left: the caller then generates anew from the cursor. (Accepting a suggestion cut after
        a line break leaves that break: the user saw none, and expects a new suggestion.) ""
        when nothing was typed and the model ended there with only whitespace.
        """
        typed = self.typed
        suggestion = self.suggestion
        await suggestion.settle(len(typed), budget)
        if not suggestion.text.startswith(typed):
            return None
        rest = suggestion.shown(len(typed))
        if rest.strip():
            return rest
        # Asked again where the model ended with nothing to show: that is the answer, again.
        answered = not typed and suggestion.finished and not suggestion.stopped
        return "" if answered else None


@dataclass(frozen=True)
class _Shown:
    uri: str
    text_before_cursor: str
    start: int
    suggestion: LiveSuggestion
    one_line: bool


class SuggestionCache:
    """Remembers the last suggestion, so typing its first characters needs no model call."""

    def __init__(self) -> None:
        self._last: _Shown | None = None

    def remember(
        self,
        uri: str,
        text_before_cursor: str,
        suggestion: LiveSuggestion,
        *,
        start: int = 0,
        one_line: bool = False,
    ) -> None:
        """Keep `suggestion`, shown at the end of `text_before_cursor` in document `uri`.

        `start`: where `text_before_cursor` begins in the document (a completion keeps only the
        part a prompt can use, see `completion.prompt_text_start`).
        `one_line`: it was made in the middle of a line, so it stops at its first line break.
        """
        self._last = _Shown(uri, text_before_cursor, start, suggestion, one_line)

    def is_current(self, suggestion: LiveSuggestion) -> bool:
        """True while `suggestion` is the last one remembered (no newer request replaced it)."""
        return self._last is not None and self._last.suggestion is suggestion

    def forget(self) -> None:
        """Drop the remembered suggestion (e.g. when the model changes)."""
        self._last = None

    def is_generating_in(self, uri: str) -> bool:
        """True while the last suggestion is `uri`'s and the model still adds to it."""
        return (
            self._last is not None and self._last.uri == uri and not self._last.suggestion.finished
        )

    def forget_document(self, uri: str) -> None:
        """Drop the remembered suggestion if it is `uri`'s: it holds the text before its cursor
        (the part a prompt can use), which a closed document no longer needs."""
        if self._last is not None and self._last.uri == uri:
            self._last = None

    def typed_through(
        self, uri: str, text_before_cursor: str, *, start: int = 0, one_line: bool = False
    ) -> TypedThrough | None:
        """The last suggestion, if the user has since typed nothing but its first characters.

        Typing through means: same document, the text before the cursor is the old text plus
        what was typed, and the suggestion (as far as it has been generated) starts with it.
        A text that begins later in the document (`start`: typing moved it on) is compared
        with the end of the old one. Asking again at the same place counts too (nothing
        typed). A suggestion made for one line does not answer where the whole continuation is
        shown (`one_line` False: the end of a line, e.g. once the rest of the line was deleted).
        """
        last = self._last
        if last is None or last.uri != uri or not last.start <= start:
            return None
        if last.one_line and not one_line:
            return None
        if start - last.start > len(last.text_before_cursor):
            return None  # begins after the old text's end: nothing to compare
        old_text = last.text_before_cursor[start - last.start :]
        if not text_before_cursor.startswith(old_text):
            return None
        typed = text_before_cursor[len(old_text) :]
        if not last.suggestion.text.startswith(typed):
            return None
        return TypedThrough(last.suggestion, typed)


def _never(text: str) -> bool:
    return False
