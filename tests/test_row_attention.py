"""Attention as the model runs it: prompt passes attend as SDPA does, masks that hide keys are
kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from phi3_lsp.row_attention import attention_row_by_row


class GroupedAttention(nn.Module):
    """What the attention functions read of a Llama attention layer: 3 query heads a key head."""

    is_causal = True
    num_key_value_groups = 3


@pytest.fixture
def layer() -> GroupedAttention:
    torch.manual_seed(0)
    return GroupedAttention()


def queries_keys_values(rows: int, keys: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # As transformers hands them over: the queries a transposed view, keys and values views of
    # a cache buffer with room to spare.
    query = torch.randn(1, rows, 9, 64).transpose(1, 2)
    cache = torch.randn(2, 1, 3, keys + 20, 64)
    return query, cache[0, :, :, :keys], cache[1, :, :, :keys]


@pytest.mark.parametrize(("rows", "keys"), [(40, 40), (40, 300), (5, 300)])
def test_a_causal_pass_attends_as_sdpa_does(layer: nn.Module, rows: int, keys: int) -> None:
    query, key, value = queries_keys_values(rows, keys)
    causal = torch.ones(rows, keys, dtype=torch.bool).tril(keys - rows)[None, None]
    ours = attention_row_by_row(layer, query, key, value, causal, scaling=0.125)[0]
    sdpa = sdpa_attention_forward(layer, query, key, value, causal, scaling=0.125)[0]
    assert ours.shape == (1, rows, 9, 64)
    assert torch.allclose(ours, sdpa, rtol=1e-5, atol=1e-5)


def test_a_mask_that_hides_keys_is_kept(layer: nn.Module) -> None:
    query, key, value = queries_keys_values(40, 300)
    # Causal, but the first 10 keys are padding that no position may see.
    mask = torch.ones(40, 300, dtype=torch.bool).tril(260)
    mask[:, :10] = False
    ours = attention_row_by_row(layer, query, key, value, mask[None, None], scaling=0.125)[0]
    sdpa = sdpa_attention_forward(layer, query, key, value, mask[None, None], scaling=0.125)[0]
    assert torch.equal(ours, sdpa)
