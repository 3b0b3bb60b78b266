"""The keys and values of recent prompts, kept per document for the next request to reuse.

A document's next prompt usually shares a long token prefix with its last one (the text before
the cursor, one keystroke later): only the tokens after the shared prefix need a pass.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transformers import DynamicCache

from phi3_lsp.memory_release import release_freed_memory
from phi3_lsp.prefixes import common_prefix_length

log = logging.getLogger(__name__)


@dataclass
class _CachedSequence:
    token_ids: list[int]
    cache: DynamicCache


class PromptCache:
    """The KV cache of the last sequence per key; least recently used keys go first.

    Bounded by a number of keys, by the tokens held over all keys, and by the memory left: while
    `memory_is_short(tokens)` (is there no room for another completion of `tokens`?), other
    keys' caches go, the least recently used first, when a cache is put (the document being
    edited keeps its own: its next prompt adds a few tokens) and when one is taken (to make room
    for reading a prompt). After dropping caches it calls `release` (see `memory_release`), so
    that their memory goes back to the system rather than staying with the C heap. A cache is
    handed out to one generation at a time (`take` removes it), so it is never shared and needs
    no copy.
    """

    def __init__(
        self,
        *,
        max_keys: int = 4,
        max_tokens: int = 16384,
        memory_is_short: Callable[[int], bool] = lambda tokens: False,
        release: Callable[[], None] = release_freed_memory,
    ) -> None:
        self.max_keys = max_keys
        self.max_tokens = max_tokens
        self._memory_is_short = memory_is_short
        self._release = release
        self._entries: OrderedDict[str, _CachedSequence] = OrderedDict()

    @property
    def total_tokens(self) -> int:
        """Tokens held over all keys."""
        return sum(len(entry.token_ids) for entry in self._entries.values())

    def reusable(self, key: str, prompt_ids: Sequence[int]) -> int:
        """How many of `prompt_ids` the key's cache covers, as `take` would count them, without
        taking or cropping it."""
        entry = self._entries.get(key)
        return 0 if entry is None else _covered(entry.token_ids, prompt_ids)

    def take(self, key: str, prompt_ids: Sequence[int]) -> tuple[DynamicCache | None, int]:
        """Remove the key's cache and crop it to the prefix it shares with `prompt_ids`.

        Returns the cache and the number of prompt tokens it covers (see `_covered`).
        """
        entry = self._entries.pop(key, None)
        self._drop_while_memory_is_short(spare=None, tokens=len(prompt_ids))
        if entry is None:
            return None, 0
        reusable = _covered(entry.token_ids, prompt_ids)
        if reusable == 0:
            return None, 0
        surplus = len(entry.token_ids) - reusable
        if surplus:
            entry.cache.crop(-surplus)  # a negative count removes that many trailing tokens
        return entry.cache, reusable

    def put(self, key: str, token_ids: Sequence[int], cache: DynamicCache) -> None:
        """Keep `cache`, which holds the keys and values of exactly `token_ids`, under `key`."""
        dropped = self._entries.pop(key, None) is not None
        if token_ids and len(token_ids) <= self.max_tokens:
            self._entries[key] = _CachedSequence(list(token_ids), cache)
        while len(self._entries) > self.max_keys or self.total_tokens > self.max_tokens:
            self._entries.popitem(last=False)
            dropped = True
        if dropped:
            self._release()
        self._drop_while_memory_is_short(spare=key, tokens=len(token_ids))

    def discard(self, key: str) -> None:
        """Forget the key's cache (e.g. when its document closes)."""
        if self._entries.pop(key, None) is not None:
            self._release()

    def clear(self) -> None:
        """Forget every cache (e.g. when passes over prompts would now give other bits)."""
        if self._entries:
            self._entries.clear()
            self._release()

    def _drop_while_memory_is_short(self, spare: str | None, tokens: int) -> None:
        """Drop the least recently used caches but `spare`'s while memory is short for a
        completion of `tokens`; one at a time, released at once, so that the next measure
        counts what was freed."""
        while True:
            others = [key for key in self._entries if key != spare]
            if not others or not self._memory_is_short(tokens):
                return
            del self._entries[others[0]]
            self._release()
            log.info("Memory is short: dropped the cached prompt of %s", others[0])


def _covered(cached_ids: Sequence[int], prompt_ids: Sequence[int]) -> int:
    """Prompt tokens that a cache of `cached_ids` covers: their shared prefix, at most all but
    the last prompt token (which is always recomputed: its logits give the first new token)."""
    return max(0, min(common_prefix_length(cached_ids, prompt_ids), len(prompt_ids) - 1))
