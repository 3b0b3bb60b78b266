"""The growing KV cache holds what transformers' DynamicCache holds, without copying per token."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from phi3_lsp.kv_cache import GrowingCache, GrowingLayer, truncate


def states(tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(1, 3, tokens, 8), torch.randn(1, 3, tokens, 8)


def test_updates_and_crops_leave_the_same_keys_and_values_as_a_dynamic_cache() -> None:
    growing, dynamic = GrowingCache(), DynamicCache()
    steps: list[int] = [20, 1, 1, -5, 3, 200, -150, 1]  # >0: tokens added, <0: tokens cropped
    for step in steps:
        if step < 0:
            growing.crop(step)
            dynamic.crop(step)
            continue
        for layer in range(2):
            keys, values = states(step)
            returned = growing.update(keys, values, layer)
            expected = dynamic.update(keys, values, layer)
            assert torch.equal(returned[0], expected[0])
            assert torch.equal(returned[1], expected[1])
        assert growing.get_seq_length() == dynamic.get_seq_length()


def test_a_decode_step_writes_in_place() -> None:
    cache = GrowingCache()
    keys, _ = cache.update(*states(100), 0)
    storage = keys.data_ptr()
    for _ in range(12):
        keys, _ = cache.update(*states(1), 0)
    assert keys.shape[-2] == cache.get_seq_length() == 112
    assert keys.data_ptr() == storage


def test_truncating_mends_layers_of_different_lengths() -> None:
    # A pass stopped after its first layer: that layer holds 7 more positions than the second.
    cache = GrowingCache()
    first, second = states(30), states(23)
    cache.update(*first, 0)
    cache.update(*second, 1)
    truncate(cache, 20)
    for layer, (keys, values) in zip(cache.layers, (first, second), strict=True):
        assert isinstance(layer, GrowingLayer)
        assert layer.keys is not None and layer.values is not None
        assert torch.equal(layer.keys, keys[..., :20, :])
        assert torch.equal(layer.values, values[..., :20, :])
    assert cache.get_seq_length() == 20
