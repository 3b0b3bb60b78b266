"""Drafted tokens for greedy decoding, looked up in the text so far (prompt lookup decoding).

Code repeats itself: names, calls, whole lines. When the last few tokens occurred before, the
tokens that followed them then are a good guess for what follows now. One forward pass checks
such a draft: fed the next token and the drafted ones, it gives the model's own choice at every
position, and drafted tokens are kept only while they equal it. The text is the one plain
greedy decoding gives; only the number of passes changes.

A pass over more tokens costs more (on this CPU's int4 kernel, a pass over 3 tokens ~1.4x one
over 1), so `DraftPlanner` drafts only as many tokens as pay for themselves, from the share of
drafted tokens recently kept and the measured time of passes of each width.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_NGRAM = 4
MIN_NGRAM = 2
"""A single repeated token says too little about what follows it to be worth a wider pass."""
MAX_DRAFT = 4
"""Beyond this, the kernel's cost per token grows faster than what a draft typically keeps."""
LOOKUP_WINDOW = 4096
"""Tokens searched for a match: the most recent ones, so that indexing a long prompt stays cheap."""

_DECAY = 0.9
"""Weight of older drafts in the kept share and of older timings: recent text matters most."""
_PRIOR_DRAFTED, _PRIOR_KEPT = 2.0, 1.0
"""Before any draft is checked, half of the drafted tokens are assumed kept."""
_GUESSED_EXTRA_COST = 0.15
"""Until a width has been timed, each extra token is guessed to add this share of a 1-token
pass: optimistic, so that every useful width gets tried and timed."""


class TokenLookup:
    """The text so far as tokens, indexed by the n-grams in it, to find what followed them."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self._tokens: list[int] = []
        # For each n: an n-gram -> the position of the token after its latest occurrence.
        self._followers: dict[int, dict[tuple[int, ...], int]] = {
            n: {} for n in range(MIN_NGRAM, MAX_NGRAM + 1)
        }
        self.extend(tokens[-LOOKUP_WINDOW:])

    def extend(self, tokens: Sequence[int]) -> None:
        """Add tokens at the end of the text."""
        for token in tokens:
            position = len(self._tokens)
            for n, followers in self._followers.items():
                if position >= n:
                    followers[tuple(self._tokens[position - n :])] = position
            self._tokens.append(token)

    def draft(self, count: int) -> list[int]:
        """Up to `count` tokens that followed the latest earlier occurrence of the longest
        n-gram the text ends with ([] when the text's last tokens never occurred before)."""
        if count <= 0:
            return []
        for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
            if len(self._tokens) <= n:
                continue
            follower = self._followers[n].get(tuple(self._tokens[-n:]))
            if follower is not None:
                return self._tokens[follower : follower + count]
        return []


class DraftPlanner:
    """How many tokens to draft: the count that gives the most kept tokens per second.

    If each drafted token is kept with probability p (once the one before it was), a pass
    with k drafted tokens yields 1 + p + ... + p^k tokens, at the measured cost of a pass
    over k + 1 tokens.
    """

    def __init__(self) -> None:
        self._drafted = _PRIOR_DRAFTED
        self._kept = _PRIOR_KEPT
        self._pass_seconds: dict[int, float] = {}
        """Recent seconds of a decode pass, per number of tokens fed."""

    @property
    def kept_share(self) -> float:
        """The share of recently drafted tokens that the model's own choice confirmed."""
        return self._kept / self._drafted

    def draft_length(self, limit: int) -> int:
        """The number of tokens to draft, at most `limit` (0: feed one token)."""
        if 1 not in self._pass_seconds:
            return 0  # nothing to compare a wider pass with yet
        share = self.kept_share
        best_length, best_rate = 0, 1.0 / self._cost(1)
        for length in range(1, min(MAX_DRAFT, limit) + 1):
            expected_tokens = sum(share**kept for kept in range(length + 1))
            rate = expected_tokens / self._cost(length + 1)
            if rate > best_rate:
                best_length, best_rate = length, rate
        return best_length

    def record_draft(self, drafted: int, kept: int) -> None:
        """Note that a pass confirmed `kept` of `drafted` tokens (also of tokens it was not fed:
        what a draft would have been)."""
        if drafted:
            self._drafted = self._drafted * _DECAY + drafted
            self._kept = self._kept * _DECAY + kept

    def record_pass(self, width: int, seconds: float) -> None:
        """Note that a decode pass over `width` tokens took `seconds`."""
        before = self._pass_seconds.get(width)
        self._pass_seconds[width] = (
            seconds if before is None else before * _DECAY + seconds * (1 - _DECAY)
        )

    def _cost(self, width: int) -> float:
        """Seconds of a pass over `width` tokens: measured, or guessed from a 1-token pass."""
        measured = self._pass_seconds.get(width)
        if measured is not None:
            return measured
        return self._pass_seconds[1] * (1 + _GUESSED_EXTRA_COST * (width - 1))
