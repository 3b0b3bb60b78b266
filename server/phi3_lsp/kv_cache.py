"""A KV cache that appends in place: a decode step writes one token instead of copying all.

transformers' `DynamicLayer` concatenates on every update, which copies the whole layer cache
for each new token: on a 1,500-token prompt that is 69 MB per step for SmolLM2 and 1.2 GB for
Phi-3-mini. `GrowingLayer` keeps its keys and values in buffers with room to spare and hands
the model views of the filled part; cropping (for prompt reuse) only shortens the views.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

SPARE_TOKENS = 64
"""Room added to every new buffer, beyond an eighth of what it holds (at most ~12% unused)."""


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]  # transformers is untyped
    """One layer's keys and values [batch, heads, tokens, head_dim], in buffers that grow."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        needed = key_states.shape[-2]
        keys, values, held = self.room_for(needed, key_states, value_states)
        needed += held
        keys[..., held:needed, :] = key_states
        values[..., held:needed, :] = value_states
        return self.hold(needed)

    def room_for(
        self, positions: int, keys_like: torch.Tensor, values_like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The key and value buffers, with room for `positions` more after the ones held, and
        how many are held. `keys_like` and `values_like` [batch, heads, any, head_dim] give
        the buffers' shape and dtype on a first update."""
        if not self.is_initialized:
            self.lazy_initialization(keys_like, values_like)
        held = self.get_seq_length()
        needed = held + positions
        if self._key_buffer is None or self._value_buffer is None:
            self._key_buffer = _buffer_like(keys_like, needed)
            self._value_buffer = _buffer_like(values_like, needed)
        elif needed > self._key_buffer.shape[-2]:
            self._key_buffer = _grown(self._key_buffer, held, needed)
            self._value_buffer = _grown(self._value_buffer, held, needed)
        return self._key_buffer, self._value_buffer, held

    def hold(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Hold the first `tokens` positions written into the buffers; returns their views."""
        assert self._key_buffer is not None and self._value_buffer is not None
        self.keys = self._key_buffer[..., :tokens, :]
        self.values = self._value_buffer[..., :tokens, :]
        return self.keys, self.values


class GrowingCache(DynamicCache):
    """A `DynamicCache` whose layers are `GrowingLayer`s."""

    def __init__(self) -> None:
        super().__init__()
        # Layers are created as the model first updates them, from this class.
        self.layer_class_to_replicate = GrowingLayer
        self.reading_prompt = False
        """Whether the pass now running reads a prompt, whose positions no pass compares with
        one-token passes (drafted tokens are): our kernel may then take its 4-bit products, and
        its fp32 products over bf16-held weights, on AMX tiles at any width (int4_tiles.c,
        fp32_tiles.c; see `layer_kernel`). Set by `prompt_pass`."""

    def layer(self, index: int) -> GrowingLayer:
        """Layer `index`, created (with the ones before it) as `update` creates them."""
        while len(self.layers) <= index:
            self.layers.append(GrowingLayer())
        layer = self.layers[index]
        assert isinstance(layer, GrowingLayer)
        return layer


@contextmanager
def prompt_pass(cache: DynamicCache) -> Iterator[None]:
    """Marks the passes run over `cache` in the block as reading a prompt (where the cache is
    a `GrowingCache`: elsewhere the layers are transformers', which do not ask)."""
    if not isinstance(cache, GrowingCache):
        yield
        return
    cache.reading_prompt = True
    try:
        yield
    finally:
        cache.reading_prompt = False


def cache_argument(model: nn.Module) -> str:
    """The name under which `model.forward` takes a KV cache: transformers 5.24 renamed
    `past_key_values` to `cache`; custom (remote) code may not have."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def truncate(cache: DynamicCache, tokens: int) -> None:
    """Keep the first `tokens` positions of every layer of `cache`.

    Unlike `DynamicCache.crop`, which removes as many positions from every layer, this also
    mends a cache whose layers hold different lengths: a pass stopped between two layers
    (see `stoppable_passes`) has written its positions to the first layers only.
    """
    for layer in cache.layers:
        assert isinstance(layer, DynamicLayer)  # what `GrowingCache` and `DynamicCache()` hold
        surplus = layer.get_seq_length() - tokens
        if surplus > 0:
            layer.crop(-surplus)


def _buffer_like(states: torch.Tensor, tokens: int) -> torch.Tensor:
    shape = (*states.shape[:-2], tokens + tokens // 8 + SPARE_TOKENS, states.shape[-1])
    return states.new_empty(shape)


def _grown(buffer: torch.Tensor, held: int, tokens: int) -> torch.Tensor:
    grown = _buffer_like(buffer, tokens)
    grown[..., :held, :] = buffer[..., :held, :]
    return grown
