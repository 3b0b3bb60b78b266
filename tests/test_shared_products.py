"""Sibling 4-bit projections of one input share one product and keep their own outputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from phi3_lsp.int4_weights import Int4Weight
from phi3_lsp.quantize import Int4Linear, int4_tensors
from phi3_lsp.shared_products import share_products
from tiny_llama import HIDDEN, LAYERS, new_int4_llama, prompt_then_steps, stacks_on_this_cpu

pytestmark = pytest.mark.skipif(
    not stacks_on_this_cpu(), reason="this CPU's packed layout is not one torch is known to use"
)


@pytest.fixture
def int4_llama(seeded: None) -> nn.Module:
    return new_int4_llama()


def count_products(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the layers' 4-bit products (`Int4Weight.multiply_inputs` calls, each one call of
    a kernel) into the returned list, as their numbers of rows."""
    calls: list[int] = []
    multiply_inputs = Int4Weight.multiply_inputs

    def counted(weight: Int4Weight, inputs: torch.Tensor) -> torch.Tensor:
        calls.append(inputs.numel() // weight.in_features)
        return multiply_inputs(weight, inputs)

    monkeypatch.setattr(Int4Weight, "multiply_inputs", counted)
    return calls


@pytest.mark.parametrize("prompt_length", [12, 300])  # 300 rows: a long prompt's products
def test_shared_products_give_every_layer_the_same_bits(
    int4_llama: nn.Module, prompt_length: int
) -> None:
    shared = copy.deepcopy(int4_llama)
    assert share_products(shared) == 2 * LAYERS  # q, k, v and gate, up in every layer
    expected = prompt_then_steps(int4_llama, prompt_length)
    actual = prompt_then_steps(shared, prompt_length)
    assert all(torch.equal(a, e) for a, e in zip(actual, expected, strict=True))


def test_a_decode_step_calls_the_kernel_once_per_group(
    int4_llama: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    share_products(int4_llama)
    calls = count_products(monkeypatch)
    prompt_then_steps(int4_llama, 12)
    # Per layer: q, k, v at once, o, gate and up at once, down; then the vocabulary
    # projection's 4-bit screen; four passes.
    assert len(calls) == 4 * (4 * LAYERS + 1)


def test_a_layer_called_with_another_input_gets_that_inputs_product(
    int4_llama: nn.Module,
) -> None:
    attention = int4_llama.get_submodule("model.layers.0.self_attn")
    alone = copy.deepcopy(attention)
    share_products(int4_llama)
    first, second = torch.randn(1, 3, HIDDEN), torch.randn(1, 3, HIDDEN)
    layer, alone_layer = attention.get_submodule, alone.get_submodule
    with torch.inference_mode():
        layer("q_proj")(first)
        assert torch.equal(layer("k_proj")(second), alone_layer("k_proj")(second))
        assert torch.equal(layer("v_proj")(first), alone_layer("v_proj")(first))
        # The same input twice to one layer is multiplied again, not taken twice.
        assert torch.equal(layer("v_proj")(first), alone_layer("v_proj")(first))


def test_shared_layers_still_hand_out_their_own_weights(int4_llama: nn.Module) -> None:
    stored = int4_tensors(int4_llama)
    share_products(int4_llama)
    after = int4_tensors(int4_llama)
    assert after.keys() == stored.keys()
    assert all(torch.equal(after[name], stored[name]) for name in stored)
    up = int4_llama.get_submodule("model.layers.1.mlp.up_proj")
    assert isinstance(up, Int4Linear) and up.shared_product is not None
    rows = torch.randn(2, HIDDEN).to(torch.bfloat16)
    with torch.inference_mode():
        expected = up.weight_int4.multiply(rows)
    assert torch.equal(expected, up(rows.float()).to(torch.bfloat16))
