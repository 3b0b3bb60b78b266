"""A tiny Llama (grouped keys and values, like SmolLM2) and a tiny Phi-3 (fused projections) in
their int4 and fp32 forms, and a pass runner."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM

from phi3_lsp.cpu_kernels import own_kernels
from phi3_lsp.int4_weights import can_unpack
from phi3_lsp.kv_cache import GrowingCache
from phi3_lsp.quantize import quantize_to_int4
from phi3_lsp.shared_products import share_products

LAYERS = 2
HIDDEN = 128
HEADS, KV_HEADS = 4, 2
VOCABULARY = 512
SMALLEST_PROJECTION = HIDDEN // HEADS * KV_HEADS
"""Output rows of the keys' and values' projections: a whole block of packed rows on every CPU
layout torch has (64 rows with AVX-512), so that the projections can be stacked."""

_SHAPE: dict[str, Any] = {
    "vocab_size": VOCABULARY,
    "hidden_size": HIDDEN,
    "intermediate_size": 192,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
}


def new_int4_llama() -> nn.Module:
    """A seeded tiny Llama with int4 layers (seed torch first for the same weights)."""
    return _in_int4(new_fp32_llama())


def new_int4_phi3() -> nn.Module:
    """A seeded tiny Phi-3 with int4 layers (seed torch first for the same weights)."""
    return _in_int4(new_fp32_phi3())


def new_fp32_llama() -> nn.Module:
    """A seeded tiny Llama in fp32, in eval mode (seed torch first for the same weights)."""
    model: nn.Module = LlamaForCausalLM(LlamaConfig(**_SHAPE))
    return model.eval()


def new_fp32_phi3() -> nn.Module:
    """A seeded tiny Phi-3 in fp32, in eval mode (seed torch first for the same weights)."""
    # Phi3Config's default special tokens lie beyond this vocabulary.
    special_tokens: dict[str, Any] = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    model: nn.Module = Phi3ForCausalLM(Phi3Config(**_SHAPE, **special_tokens))
    return model.eval()


def _in_int4(model: nn.Module) -> nn.Module:
    quantize_to_int4(model)
    return model


def prompt_then_steps(model: nn.Module, prompt_length: int) -> list[torch.Tensor]:
    """The logits of a prompt pass and of three one-token passes after it."""
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, VOCABULARY, (1, prompt_length), generator=generator)
    cache = GrowingCache()
    with torch.inference_mode():
        logits = [model(input_ids=prompt, cache=cache, use_cache=True).logits]
        for _ in range(3):
            token = logits[-1][:, -1:].argmax(dim=-1)
            logits.append(model(input_ids=token, cache=cache, use_cache=True).logits)
    return logits


def stacks_on_this_cpu() -> bool:
    """True when this CPU's packed layout is known, so that sibling projections are stacked."""
    return can_unpack(SMALLEST_PROJECTION)


def needs_layers_in_one_call() -> pytest.MarkDecorator:
    """Skips the tests it marks where our kernel cannot run decoder layers in one call."""
    return pytest.mark.skipif(
        own_kernels() is None or not stacks_on_this_cpu(),
        reason="our kernels need AVX-512 BF16 and VBMI and a C compiler",
    )


def new_shared_int4_llama() -> nn.Module:
    """The seeded tiny int4 Llama, its projections sharing their products: our kernel runs such
    Llama layers in one call."""
    model = new_int4_llama()
    share_products(model)
    return model
