"""One-token passes through the lean decoder-layer forward give transformers' bits."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from torch import nn

from phi3_lsp.lean_layers import lean_decoding
from phi3_lsp.shared_products import share_products
from tiny_llama import (
    LAYERS,
    new_int4_llama,
    new_int4_phi3,
    prompt_then_steps,
    stacks_on_this_cpu,
)

pytestmark = pytest.mark.skipif(
    not stacks_on_this_cpu(), reason="this CPU's packed layout is not one torch is known to use"
)


@pytest.fixture
def shared_llama(seeded: None) -> nn.Module:
    model = new_int4_llama()
    share_products(model)
    return model


@pytest.mark.parametrize("prompt_length", [1, 12])
def test_one_token_passes_give_transformers_bits(
    shared_llama: nn.Module, prompt_length: int
) -> None:
    lean = copy.deepcopy(shared_llama)
    assert lean_decoding(lean) == LAYERS
    expected = prompt_then_steps(shared_llama, prompt_length)
    actual = prompt_then_steps(lean, prompt_length)
    assert all(a.equal(e) for a, e in zip(actual, expected, strict=True))


@pytest.mark.parametrize("prompt_length", [1, 12])
def test_phi3s_one_token_passes_give_transformers_bits(seeded: None, prompt_length: int) -> None:
    model = new_int4_phi3()
    lean = copy.deepcopy(model)
    assert lean_decoding(lean) == LAYERS
    expected = prompt_then_steps(model, prompt_length)
    actual = prompt_then_steps(lean, prompt_length)
    assert all(a.equal(e) for a, e in zip(actual, expected, strict=True))


@pytest.mark.parametrize("phi3", [False, True], ids=["llama", "phi3"])
def test_one_token_passes_take_the_short_way(
    seeded: None, monkeypatch: pytest.MonkeyPatch, phi3: bool
) -> None:
    from transformers.models.llama import modeling_llama
    from transformers.models.phi3 import modeling_phi3

    attention_class: type[nn.Module]
    if phi3:
        model, attention_class = new_int4_phi3(), modeling_phi3.Phi3Attention
    else:
        model, attention_class = new_int4_llama(), modeling_llama.LlamaAttention
        share_products(model)
    lean_decoding(model)
    attention_calls: list[nn.Module] = []
    full_forward = attention_class.forward

    def counted(attention: nn.Module, *args: Any, **kwargs: Any) -> Any:
        attention_calls.append(attention)
        return full_forward(attention, *args, **kwargs)

    monkeypatch.setattr(attention_class, "forward", counted)
    prompt_then_steps(model, 12)
    # The prompt goes through transformers' attention in every layer; the 3 steps do not.
    assert len(attention_calls) == LAYERS


def test_layers_without_shared_products_keep_their_forward(seeded: None) -> None:
    assert lean_decoding(new_int4_llama()) == 0


def test_other_attention_than_sdpa_keeps_transformers_forward(shared_llama: nn.Module) -> None:
    # The short way runs SDPA attention; eager attention rounds differently.
    shared_llama.set_attn_implementation("eager")  # type: ignore[operator]
    assert lean_decoding(shared_llama) == 0
