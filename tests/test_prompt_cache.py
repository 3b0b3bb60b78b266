"""The prompt cache: what it hands back for reuse, and what it keeps within its bounds."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from phi3_lsp.prefixes import common_prefix_length
from phi3_lsp.prompt_cache import PromptCache


def filled_cache(tokens: int) -> DynamicCache:
    cache = DynamicCache()
    for layer in range(2):
        states = torch.arange(tokens, dtype=torch.float32).reshape(1, 1, tokens, 1)
        cache.update(states, states.clone(), layer)
    return cache


def test_a_shared_prefix_is_kept_and_the_rest_cropped() -> None:
    cache = PromptCache()
    cache.put("doc", [1, 2, 3, 4, 5], filled_cache(5))
    kept, reused = cache.take("doc", [1, 2, 3, 9, 9, 9])
    assert reused == 3
    assert kept is not None and kept.get_seq_length() == 3


def test_the_last_prompt_token_is_always_recomputed() -> None:
    cache = PromptCache()
    cache.put("doc", [1, 2, 3, 4], filled_cache(4))
    kept, reused = cache.take("doc", [1, 2, 3, 4])
    assert reused == 3
    assert kept is not None and kept.get_seq_length() == 3


def test_nothing_shared_means_no_cache() -> None:
    cache = PromptCache()
    cache.put("doc", [1, 2], filled_cache(2))
    assert cache.take("doc", [7, 8]) == (None, 0)


def test_what_a_cache_covers_is_counted_as_take_counts_it_and_the_cache_stays_whole() -> None:
    cache = PromptCache()
    cache.put("doc", [1, 2, 3, 4, 5], filled_cache(5))
    assert cache.reusable("doc", [1, 2, 3, 9]) == 3
    assert cache.reusable("doc", [1, 2, 3]) == 2  # the last prompt token is recomputed
    assert cache.reusable("other", [1, 2, 3]) == 0
    kept, reused = cache.take("doc", [1, 2, 3, 4, 5, 6])
    assert reused == 5
    assert kept is not None and kept.get_seq_length() == 5


def test_a_cache_is_handed_out_once() -> None:
    cache = PromptCache()
    cache.put("doc", [1, 2, 3], filled_cache(3))
    assert cache.take("doc", [1, 2, 3, 4])[1] == 3
    assert cache.take("doc", [1, 2, 3, 4]) == (None, 0)


def test_least_recently_used_keys_go_first() -> None:
    cache = PromptCache(max_keys=2)
    for key in ("a", "b", "c"):
        cache.put(key, [1, 2, 3], filled_cache(3))
    assert cache.take("a", [1, 2, 3])[1] == 0
    assert cache.take("b", [1, 2, 3])[1] == 2
    assert cache.take("c", [1, 2, 3])[1] == 2


def test_the_token_budget_bounds_all_keys() -> None:
    cache = PromptCache(max_tokens=10)
    cache.put("a", list(range(6)), filled_cache(6))
    cache.put("b", list(range(6)), filled_cache(6))
    assert cache.total_tokens == 6
    cache.put("huge", list(range(11)), filled_cache(11))
    assert cache.total_tokens == 6
    assert cache.take("b", list(range(6)))[1] == 5


def test_a_discarded_key_is_gone() -> None:
    cache = PromptCache()
    cache.put("doc", [1, 2, 3], filled_cache(3))
    cache.discard("doc")
    assert cache.total_tokens == 0


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2


class CountedRelease:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def test_memory_is_released_when_a_discard_or_the_bounds_drop_a_cache() -> None:
    release = CountedRelease()
    cache = PromptCache(max_keys=2, release=release)
    cache.put("a", [1, 2, 3], filled_cache(3))
    cache.put("b", [1, 2, 3], filled_cache(3))
    cache.discard("never-opened")
    assert release.calls == 0
    cache.put("c", [1, 2, 3], filled_cache(3))  # "a" goes
    assert release.calls == 1
    cache.discard("b")
    assert release.calls == 2


def test_a_cache_taken_and_put_back_releases_nothing() -> None:
    release = CountedRelease()
    cache = PromptCache(release=release)
    cache.put("doc", [1, 2, 3], filled_cache(3))
    kept, reused = cache.take("doc", [1, 2, 3, 4])
    assert kept is not None and reused == 3
    cache.put("doc", [1, 2, 3], kept)
    assert release.calls == 0


def test_while_memory_is_short_the_least_recently_used_prompts_go() -> None:
    release = CountedRelease()
    # Short until two prompts are dropped (memory measured after each release).
    cache = PromptCache(memory_is_short=lambda tokens: release.calls < 2, release=release)
    for key in ("a", "b", "c", "d"):
        cache.put(key, [1, 2, 3], filled_cache(3))
    assert release.calls == 2
    assert [cache.take(key, [1, 2, 3])[1] for key in ("a", "b", "c", "d")] == [0, 0, 2, 2]


def test_when_memory_stays_short_only_the_document_being_edited_keeps_its_prompt() -> None:
    cache = PromptCache(memory_is_short=lambda tokens: True, release=CountedRelease())
    cache.put("a", [1, 2, 3], filled_cache(3))
    cache.put("b", [1, 2, 3], filled_cache(3))
    assert cache.total_tokens == 3
    assert cache.take("b", [1, 2, 3, 4])[1] == 3


def test_when_memory_is_short_asking_for_another_document_drops_the_rest_first() -> None:
    cache = PromptCache(memory_is_short=lambda tokens: True, release=CountedRelease())
    cache.put("a", [1, 2, 3], filled_cache(3))
    assert cache.take("b", [1, 2, 3, 4]) == (None, 0)
    assert cache.total_tokens == 0


def test_memory_is_asked_for_room_for_a_completion_as_long_as_the_last() -> None:
    # Room for 4 tokens' completion beside what is held, not for more.
    cache = PromptCache(memory_is_short=lambda tokens: tokens > 4, release=CountedRelease())
    cache.put("a", [1, 2, 3], filled_cache(3))
    cache.put("b", [1, 2, 3, 4], filled_cache(4))
    assert cache.total_tokens == 7
    cache.put("c", [1, 2, 3, 4, 5], filled_cache(5))
    assert cache.total_tokens == 5
