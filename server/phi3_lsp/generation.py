"""Greedy decoding in a plain loop, with the KV cache of the previous prompt reused.

One forward pass over the uncached part of the prompt (prefill), then one pass per new token,
each time taking the most likely next token (argmax). The loop checks a stop event before
every pass, so a cancelled request returns within one decode step. Caches are kept per key
(a document URI): when the next prompt of that document shares a token prefix with the last
one, only the tail is computed.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from transformers import DynamicCache

from phi3_lsp.kv_cache import GrowingCache
from phi3_lsp.tokens import ContinuationStream, DocumentTokenizer

FinishReason = Literal["length", "eos", "stopped"]
TextCallback = Callable[[str], None]


@dataclass(frozen=True)
class Generation:
    """A finished greedy continuation and what it cost."""

    text: str
    """Only the new text, with its leading space if the model produced one."""
    token_ids: tuple[int, ...]
    """The new tokens, without the end-of-sequence token that stopped them."""
    prompt_tokens: int
    reused_prompt_tokens: int
    """Prompt tokens whose keys and values came from the cache instead of being computed."""
    prefill_seconds: float
    decode_seconds: float
    decode_steps: int
    """Forward passes after the prefill (one per token after the first)."""
    finish_reason: FinishReason

    @property
    def decode_tokens_per_second(self) -> float | None:
        """Decode speed, or None when there was no decode step."""
        if self.decode_steps == 0 or self.decode_seconds <= 0:
            return None
        return self.decode_steps / self.decode_seconds


@dataclass
class _CachedSequence:
    token_ids: list[int]
    cache: DynamicCache


class PromptCache:
    """The KV cache of the last sequence per key; least recently used keys go first.

    Bounded by a number of keys and by the tokens held over all keys. A cache is handed out
    to one generation at a time (`take` removes it), so it is never shared and needs no copy.
    """

    def __init__(self, *, max_keys: int = 4, max_tokens: int = 16384) -> None:
        self.max_keys = max_keys
        self.max_tokens = max_tokens
        self._entries: OrderedDict[str, _CachedSequence] = OrderedDict()

    @property
    def total_tokens(self) -> int:
        """Tokens held over all keys."""
        return sum(len(entry.token_ids) for entry in self._entries.values())

    def take(self, key: str, prompt_ids: Sequence[int]) -> tuple[DynamicCache | None, int]:
        """Remove the key's cache and crop it to the prefix it shares with `prompt_ids`.

        Returns the cache and the number of prompt tokens it covers, at most all but the last
        (the last prompt token is always recomputed: its logits give the first new token).
        """
        entry = self._entries.pop(key, None)
        if entry is None:
            return None, 0
        reusable = min(common_prefix_length(entry.token_ids, prompt_ids), len(prompt_ids) - 1)
        if reusable <= 0:
            return None, 0
        surplus = len(entry.token_ids) - reusable
        if surplus:
            entry.cache.crop(-surplus)  # a negative count removes that many trailing tokens
        return entry.cache, reusable

    def put(self, key: str, token_ids: Sequence[int], cache: DynamicCache) -> None:
        """Keep `cache`, which holds the keys and values of exactly `token_ids`, under `key`."""
        self._entries.pop(key, None)
        if not token_ids or len(token_ids) > self.max_tokens:
            return
        self._entries[key] = _CachedSequence(list(token_ids), cache)
        while len(self._entries) > self.max_keys or self.total_tokens > self.max_tokens:
            self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        """Forget the key's cache (e.g. when its document closes)."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget every cache."""
        self._entries.clear()


class GreedyDecoder:
    """Runs greedy generation on one causal LM. Not thread-safe: use it from one thread."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: DocumentTokenizer,
        eos_token_ids: frozenset[int],
        prompt_cache: PromptCache,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._eos_token_ids = eos_token_ids
        self._prompt_cache = prompt_cache
        accepted = inspect.signature(model.forward).parameters
        # transformers 5.24 renamed `past_key_values` to `cache`; custom (remote) code may not have.
        self._cache_argument = "cache" if "cache" in accepted else "past_key_values"
        # Models that accept `logits_to_keep` skip the vocabulary projection for all prompt
        # positions but the last: a large saving on long prompts.
        self._forward_options: dict[str, Any] = (
            {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
        )
        self.decode_threads: int | None = None
        """Torch threads for decode steps (None: as many as for the prefill).

        A decode step is a chain of small matrix-vector products; on a small model, waking
        the other threads for each one can cost more than it saves (see `ModelEngine.warm_up`).
        """

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        stop_event: threading.Event | None = None,
        on_text: TextCallback | None = None,
        cache_key: str | None = None,
    ) -> Generation:
        """Greedy continuation of `prompt_ids`; see `ModelEngine.generate`."""
        if not prompt_ids:
            raise ValueError("The prompt is empty: generation needs at least one token.")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {max_new_tokens}.")
        cache, reused = None, 0
        if cache_key is not None:
            cache, reused = self._prompt_cache.take(cache_key, prompt_ids)
        run = _Run(
            cache=cache if cache is not None else GrowingCache(),
            fed_ids=list(prompt_ids[:reused]),
            stream=self._tokenizer.stream(prompt_ids),
            on_text=on_text,
        )
        prefill_seconds = decode_seconds = 0.0
        finish: FinishReason = "stopped"
        with torch.inference_mode():
            started = time.perf_counter()
            if not _is_set(stop_event):
                logits = self._feed(run, prompt_ids[reused:])
                prefill_seconds = time.perf_counter() - started
                with _torch_threads(self.decode_threads):
                    finish = self._decode(run, logits, max_new_tokens, stop_event)
                decode_seconds = time.perf_counter() - started - prefill_seconds
        run.emit(run.stream.finish())
        # Only a run that finished normally leaves a cache that matches `fed_ids`.
        if cache_key is not None:
            self._prompt_cache.put(cache_key, run.fed_ids, run.cache)
        return Generation(
            text=self._tokenizer.decode_continuation(prompt_ids, run.new_ids),
            token_ids=tuple(run.new_ids),
            prompt_tokens=len(prompt_ids),
            reused_prompt_tokens=reused,
            prefill_seconds=prefill_seconds,
            decode_seconds=decode_seconds,
            decode_steps=max(0, len(run.fed_ids) - len(prompt_ids)),
            finish_reason=finish,
        )

    def _decode(
        self,
        run: _Run,
        logits: torch.Tensor,
        max_new_tokens: int,
        stop_event: threading.Event | None,
    ) -> FinishReason:
        """Pick tokens one by one until EOS, the token limit or a stop."""
        while True:
            next_id = int(torch.argmax(logits))
            if next_id in self._eos_token_ids:
                return "eos"
            run.new_ids.append(next_id)
            run.emit(run.stream.push(next_id))
            if len(run.new_ids) >= max_new_tokens:
                return "length"
            # Checked before every forward pass: a stop costs at most the pass in flight.
            if _is_set(stop_event):
                return "stopped"
            logits = self._feed(run, [next_id])

    def _feed(self, run: _Run, token_ids: Sequence[int]) -> torch.Tensor:
        """Run `token_ids` through the model after what the cache holds; return the last logits."""
        input_ids = torch.tensor([list(token_ids)], dtype=torch.long)
        output = self._model(
            input_ids=input_ids,
            use_cache=True,
            **{self._cache_argument: run.cache},
            **self._forward_options,
        )
        run.fed_ids.extend(token_ids)
        last_logits: torch.Tensor = output.logits[0, -1]
        return last_logits


@dataclass
class _Run:
    """The state of one generation."""

    cache: DynamicCache
    fed_ids: list[int]
    """The tokens whose keys and values `cache` holds."""
    stream: ContinuationStream
    on_text: TextCallback | None
    new_ids: list[int] = field(default_factory=list)

    def emit(self, text: str) -> None:
        if text and self.on_text is not None:
            self.on_text(text)


def common_prefix_length(first: Sequence[int], second: Sequence[int]) -> int:
    """How many leading items two sequences share."""
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return length


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` torch threads (None: unchanged), then restore the number."""
    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _is_set(event: threading.Event | None) -> bool:
    return event is not None and event.is_set()
