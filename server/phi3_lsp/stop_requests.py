"""Stopping a generation, or letting it first finish the prompt pass a newer request needs;
ending it at a token limit lowered while it runs.

A prompt is fed in chunks (see `generation`), and on Phi-3-mini a chunk takes ~40 s on 2 cores.
Each keystroke sends a new request that stops the running one. Stopped within the chunk, the
chunk was lost, though the new request begins with the same tokens and computes them again: a
user who kept typing in a long file never saw a suggestion. A stop that spares the chunk lets
the work carry over from one request to the next.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from phi3_lsp.prefixes import common_prefix_length


class StopRequest(threading.Event):
    """A stop event that may let a prompt pass in flight finish.

    `set()` stops within a layer. `stop_keeping(tokens)` stops too, but a pass over prompt
    tokens that `tokens` begins with runs to its end first: its keys and values are what the
    request with `tokens` needs. No pass starts after either.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._keeping: tuple[int, ...] | None = None  # None: not stopped yet

    def set(self) -> None:
        with self._lock:
            self._keeping = ()
            super().set()

    def stop_keeping(self, tokens: Sequence[int]) -> None:
        """Stop, sparing a prompt pass in flight over a prefix of `tokens`.

        Several calls spare only what all their `tokens` begin with; after `set()`, nothing.
        """
        with self._lock:
            if self._keeping is None:
                self._keeping = tuple(tokens)
            else:
                self._keeping = self._keeping[: common_prefix_length(self._keeping, tokens)]
            super().set()

    def spares(self, pass_tokens: Sequence[int]) -> bool:
        """True when a pass leaving `pass_tokens` in the cache may finish despite the stop."""
        keeping = self._keeping or ()
        return len(pass_tokens) <= len(keeping) and keeping[: len(pass_tokens)] == tuple(
            pass_tokens
        )


class TokenLimit:
    """The most new tokens a running generation makes, lowered while it runs when the user
    lowers `maxNewTokens`: it then ends at the new limit (or at once, if it has made as many)
    as if it had been asked for that many, its text kept."""

    def __init__(self, tokens: int) -> None:
        self._tokens = tokens

    @property
    def tokens(self) -> int:
        """The limit now."""
        return self._tokens

    def lower_to(self, tokens: int) -> None:
        """Make at most `tokens` (at least 1), if that is fewer than the limit now."""
        self._tokens = max(1, min(self._tokens, tokens))  # one int store: safe across threads
