"""The order of the server's reads of the client's settings.

Each read (the pull after `initialized`, one per `didChangeConfiguration`) waits for the
client's answer, and a client may answer them out of order: an answer that comes after a later
read's was applied is the older settings, and must not replace the newer ones.
"""

from __future__ import annotations


class SettingsReads:
    """Numbers reads as they start, and tells whether one's answer may still apply."""

    def __init__(self) -> None:
        self._started = 0
        self._applied = 0

    def start(self) -> int:
        """A new read's number."""
        self._started += 1
        return self._started

    def take(self, number: int) -> bool:
        """True when the answer of read `number` may apply (no later read's answer has), and
        notes that it did; False when it is stale."""
        if number < self._applied:
            return False
        self._applied = number
        return True
