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
from dataclasses import dataclass

from phi3_lsp.pass_planner import PassPlanner
from phi3_lsp.prefixes import common_prefix_length

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

    def draft(self, count: int, after: Sequence[int] = ()) -> list[int]:
        """Up to `count` tokens that followed the latest earlier occurrence of the longest
        n-gram the text ends with ([] when the text's last tokens never occurred before).

        `after`: tokens that follow the text but are not part of it (a draft not yet checked):
        the n-gram is the one the text followed by them ends with.
        """
        if count <= 0:
            return []
        ending = [*self._tokens[-MAX_NGRAM:], *after][-MAX_NGRAM:]
        for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
            if len(self._tokens) + len(after) <= n:
                continue
            follower = self._followers[n].get(tuple(ending[-n:]))
            if follower is not None:
                return self._tokens[follower : follower + count]
        return []


@dataclass(frozen=True)
class LookedUp:
    """What a pass planned to check `length` drafted tokens gets from the text."""

    draft: list[int]
    """The tokens the pass checks."""
    unchecked: list[int]
    """With no draft planned, the token one would have begun with: whether the pass's own
    choice equals it still shows whether drafts would be kept, so that drafting resumes where
    the text starts repeating."""

    @classmethod
    def from_text(
        cls, text: TokenLookup, length: int, room: int, after: Sequence[int] = ()
    ) -> LookedUp:
        """`length` tokens drafted from `text` (followed by `after`; see `TokenLookup.draft`)
        for a pass that can still choose `room` tokens beyond its own."""
        if length:
            return cls(text.draft(length, after), [])
        return cls([], text.draft(1, after) if room > 0 else [])

    def record(self, planner: PassPlanner, choices: Sequence[int]) -> int:
        """Note in `planner` what the pass's `choices` (its argmax at each position) kept;
        returns the drafted tokens kept."""
        kept = common_prefix_length(self.draft, choices)
        planner.record_draft(len(self.draft), kept)
        planner.record_draft(len(self.unchecked), common_prefix_length(self.unchecked, choices))
        return kept
