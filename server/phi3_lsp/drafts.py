"""Drafted tokens for greedy decoding, looked up in the text so far (prompt lookup decoding).

Code repeats itself: names, calls, whole lines. When the last few tokens occurred before, the
tokens that followed them then are a good guess for what follows now. One forward pass checks
such a draft: fed the next token and the drafted ones, it gives the model's own choice at every
position, and drafted tokens are kept only while they equal it. The text is the one plain
greedy decoding gives; only the number of passes changes.

A pass over more tokens costs more, so how many tokens to draft is planned from what recent
drafts kept and what passes cost (see `pass_planner`).
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_NGRAM = 4
MIN_NGRAM = 2
"""A single repeated token says too little about what follows it to be worth a wider pass."""
LOOKUP_WINDOW = 4096
"""Tokens searched for a match: the most recent ones, so that indexing a long prompt stays cheap."""


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
