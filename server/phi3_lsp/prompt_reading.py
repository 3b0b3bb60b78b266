"""Reports of a completion's prompt being read, for a client to show as progress.

The model reports after every decoder layer (see `prompt_progress`); a client needs far fewer
reports, and none for a prompt read in a blink, which would only flicker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

SHOWN_AFTER_SECONDS = 1.0
"""A prompt read faster than this is not reported at all."""
SHOWN_EVERY_SECONDS = 0.5
"""The least time between two reports of one prompt."""


@dataclass(frozen=True)
class PromptReading:
    """`read` of a prompt's `total` tokens (those after the reused prefix) are read.

    `ended`: the last report of this prompt, which is read in full or was stopped.
    """

    read: int
    total: int
    ended: bool = False


class PromptReadReports:
    """Forwards a prompt's reading to `send`: once it has taken `SHOWN_AFTER_SECONDS`, then at
    most every `SHOWN_EVERY_SECONDS`, and an ended report after any report."""

    def __init__(
        self,
        send: Callable[[PromptReading], None],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._send = send
        self._clock = clock
        self._started = clock()
        self._last_sent_at: float | None = None
        self._last: PromptReading | None = None

    def __call__(self, read: int, total: int) -> None:
        """What the model has read (see `prompt_progress.PromptReadCallback`)."""
        self._last = PromptReading(read, total)
        now = self._clock()
        if read >= total:
            self.end()
        elif now - self._started >= SHOWN_AFTER_SECONDS and (
            self._last_sent_at is None or now - self._last_sent_at >= SHOWN_EVERY_SECONDS
        ):
            self._send(self._last)
            self._last_sent_at = now

    def end(self) -> None:
        """The prompt is read, or its generation ended: close the reports, if any were sent."""
        if self._last_sent_at is not None and self._last is not None:
            self._send(PromptReading(self._last.read, self._last.total, ended=True))
        self._last_sent_at = None
