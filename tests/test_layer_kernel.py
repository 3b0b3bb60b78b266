"""Decoder layers run in one call by our kernel: what transformers computes, each position with
the bits a one-token pass gives it, and transformers' forward wherever the kernel cannot run;
for 4-bit models and for fp32 ones (weights held in fp32 or bf16)."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
import torch
from torch import nn

from phi3_lsp.cpu_kernels import TILES_FROM_ROWS, own_fp32_kernel, own_kernels
from phi3_lsp.fp32_products import read_at_memory_speed, short_pass_rows
from phi3_lsp.generation import CHECKED_ROWS_AT_MOST
from phi3_lsp.kv_cache import GrowingCache, prompt_pass
from phi3_lsp.layer_kernel import run_layers_in_one_call
from tiny_llama import (
    LAYERS,
    VOCABULARY,
    needs_layers_in_one_call,
    new_fp32_llama,
    new_fp32_phi3,
    new_int4_llama,
    new_int4_phi3,
    new_shared_int4_llama,
)

pytestmark = needs_layers_in_one_call()


def _new_model(phi3: bool) -> nn.Module:
    return new_int4_phi3() if phi3 else new_shared_int4_llama()


@pytest.fixture(params=[False, True], ids=["llama", "phi3"])
def models(seeded: None, request: pytest.FixtureRequest) -> tuple[nn.Module, nn.Module]:
    """A tiny int4 model as transformers runs it, and a copy whose layers run in one call."""
    model = _new_model(request.param)
    one_call = copy.deepcopy(model)
    assert run_layers_in_one_call(one_call) == LAYERS
    return model, one_call


def _count_attention_calls(monkeypatch: pytest.MonkeyPatch) -> list[nn.Module]:
    """Calls of transformers' attention forward from now on (the one-call way makes none)."""
    from transformers.models.llama.modeling_llama import LlamaAttention
    from transformers.models.phi3.modeling_phi3 import Phi3Attention

    calls: list[nn.Module] = []
    for attention_class in (LlamaAttention, Phi3Attention):
        forward = attention_class.forward

        def counted(attention: nn.Module, *args: Any, _forward: Any = forward, **kw: Any) -> Any:
            calls.append(attention)
            return _forward(attention, *args, **kw)

        monkeypatch.setattr(attention_class, "forward", counted)
    return calls


def _tokens(count: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCABULARY, (1, count), generator=torch.Generator().manual_seed(seed))


def _hidden_states(
    model: nn.Module, passes: list[torch.Tensor], prompt: bool = False, **arguments: Any
) -> list[torch.Tensor]:
    """The final hidden states of each pass, fed one after the other over one cache (marked
    as reading a prompt if `prompt`)."""
    cache = GrowingCache()
    states = []
    with torch.inference_mode():
        for ids in passes:
            with prompt_pass(cache) if prompt else contextlib.nullcontext():
                output = model(input_ids=ids, cache=cache, output_hidden_states=True, **arguments)
            states.append(output.hidden_states[-1][0].clone())
    return states


def test_passes_in_one_call_compute_what_transformers_computes(
    models: tuple[nn.Module, nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    transformers_model, one_call = models
    tokens = _tokens(45, seed=3)
    passes = [tokens[:, :40], *(tokens[:, i : i + 1] for i in range(40, 45))]
    expected = _hidden_states(transformers_model, passes)
    attention_calls = _count_attention_calls(monkeypatch)
    actual = _hidden_states(one_call, passes)
    assert attention_calls == []
    for got, wanted in zip(actual, expected, strict=True):
        # Rounding apart at most: the same 4-bit products; norms, rotary embeddings, SiLU and
        # attention in another order (most differences vanish as inputs are rounded to bf16).
        torch.testing.assert_close(got, wanted, rtol=0, atol=2e-2 * float(wanted.abs().max()))


@pytest.mark.parametrize("threads", [1, 2])
def test_every_position_of_a_pass_gets_one_token_passes_bits(
    models: tuple[nn.Module, nn.Module], threads: int
) -> None:
    # A prompt's pass, or, where AMX tiles take longer passes' products (see int4_tiles.c), one
    # as wide as a pass that checks drafted tokens against what one-token passes would pick.
    kernels = own_kernels()
    assert kernels is not None  # the module runs only with our kernels
    rows = 60 if kernels.tiles_from_rows is None else CHECKED_ROWS_AT_MOST
    _assert_each_position_gets_one_token_passes_bits(models[1], _tokens(30 + rows), threads)


def test_every_position_of_a_longer_pass_gets_the_bits_of_any_such_pass(
    models: tuple[nn.Module, nn.Module],
) -> None:
    # A prompt's wider passes may take other products (on AMX tiles, see int4_tiles.c): a
    # position must still get the same bits in any of them, on any number of threads.
    tokens = _tokens(130)
    wide = TILES_FROM_ROWS  # the shortest pass the tiles take
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        together = _hidden_states(models[1], [tokens[:, :30], tokens[:, 30:]])[1]
        torch.set_num_threads(1)
        apart = _hidden_states(
            models[1], [tokens[:, :30], tokens[:, 30 : 30 + wide], tokens[:, 30 + wide :]]
        )[1:]
    finally:
        torch.set_num_threads(before)
    assert torch.equal(together, torch.cat(apart))


def test_a_prompts_positions_get_the_same_bits_in_passes_of_any_width(
    models: tuple[nn.Module, nn.Module],
) -> None:
    # A prompt read after a reused prefix (a keystroke's few new tokens) must give what the
    # same prompt read at once gives: where AMX tiles take a prompt's products, at any width.
    tokens = _tokens(70)
    together = _hidden_states(models[1], [tokens[:, :30], tokens[:, 30:]], prompt=True)[1]
    parts = [tokens[:, :30], tokens[:, 30:35], tokens[:, 35:36], tokens[:, 36:]]
    apart = _hidden_states(models[1], parts, prompt=True)[1:]
    assert torch.equal(together, torch.cat(apart))


def _assert_each_position_gets_one_token_passes_bits(
    model: nn.Module, tokens: torch.Tensor, threads: int, cached: int = 30
) -> None:
    """The positions after the first `cached` of `tokens`, fed in one pass and one at a time
    on `threads` threads, get the same final hidden states to the bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        together = _hidden_states(model, [tokens[:, :cached], tokens[:, cached:]])[1]
        one_at_a_time = [tokens[:, i : i + 1] for i in range(cached, tokens.shape[1])]
        alone = _hidden_states(model, [tokens[:, :cached], *one_at_a_time])[1:]
    finally:
        torch.set_num_threads(before)
    for row, state in enumerate(alone):
        assert torch.equal(together[row], state[0]), f"position {cached + row}"


def test_a_pass_with_padding_keeps_the_layers_forward(
    models: tuple[nn.Module, nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    transformers_model, one_call = models
    tokens = _tokens(12)
    padding = torch.ones(1, 12, dtype=torch.long)
    padding[0, :3] = 0
    expected = _hidden_states(transformers_model, [tokens], attention_mask=padding)
    attention_calls = _count_attention_calls(monkeypatch)
    assert torch.equal(_hidden_states(one_call, [tokens], attention_mask=padding)[0], expected[0])
    assert len(attention_calls) == LAYERS


def test_passes_beyond_the_sliding_window_keep_the_layers_forward(
    seeded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model: Any = new_int4_phi3()
    model.config.sliding_window = 8
    run_layers_in_one_call(model)
    tokens = _tokens(12)
    attention_calls = _count_attention_calls(monkeypatch)
    _hidden_states(model, [tokens[:, :6], tokens[:, 6:7], tokens[:, 7:8]])
    assert attention_calls == []  # 8 keys at most: the window masks none
    _hidden_states(model, [tokens[:, :6], *(tokens[:, i : i + 1] for i in range(6, 12))])
    assert len(attention_calls) == 4 * LAYERS  # the passes over 9 to 12 keys


def _new_fp32_model(phi3: bool) -> nn.Module:
    """A tiny fp32 model whose linear layers take our fp32 kernel: a Llama with its weights in
    fp32 and its projections apart (as SmolLM2), a Phi-3 with fused ones held in bf16 (as
    Phi-3-mini)."""
    model = new_fp32_phi3() if phi3 else new_fp32_llama()
    if phi3:
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.data = module.weight.data.to(torch.bfloat16)
    kernel = own_fp32_kernel()
    assert kernel is not None
    read_at_memory_speed(model, kernel)
    return model


@pytest.fixture(params=[False, True], ids=["llama-fp32", "phi3-bf16-weights"])
def fp32_models(request: pytest.FixtureRequest) -> tuple[nn.Module, nn.Module]:
    """A tiny fp32 model with our fp32 products, and the same whose layers run in one call."""
    models = []
    for _ in range(2):  # the same weights twice (our kernel's forward cannot be deep-copied)
        torch.manual_seed(0)
        models.append(_new_fp32_model(request.param))
    layers_forward, one_call = models
    assert run_layers_in_one_call(one_call) == LAYERS
    return layers_forward, one_call


def test_fp32_short_passes_in_one_call_compute_what_the_layers_compute(
    fp32_models: tuple[nn.Module, nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    layers_forward, one_call = fp32_models
    bound = _short_pass_rows(one_call)
    tokens = _tokens(bound + 18, seed=4)
    prompt, drafted = tokens[:, : bound + 8], tokens[:, bound + 8 : -3]
    passes = [
        prompt,
        drafted,
        *(tokens[:, i : i + 1] for i in range(tokens.shape[1] - 3, tokens.shape[1])),
    ]
    expected = _hidden_states(layers_forward, passes)
    attention_calls = _count_attention_calls(monkeypatch)
    actual = _hidden_states(one_call, passes)
    # The prompt is longer than our fp32 kernel takes (the weights' dtype tells how long):
    # torch's products, the layers' forward.
    assert len(attention_calls) == LAYERS
    assert torch.equal(actual[0], expected[0])
    for got, wanted in zip(actual[1:], expected[1:], strict=True):
        # The same products; norms, rotary embeddings, SiLU and attention in another order.
        torch.testing.assert_close(got, wanted, rtol=0, atol=1e-5 * float(wanted.abs().max()))


@pytest.mark.parametrize("threads", [1, 2])
def test_every_position_of_a_short_fp32_pass_gets_one_token_passes_bits(
    fp32_models: tuple[nn.Module, nn.Module], threads: int
) -> None:
    one_call = fp32_models[1]
    tokens = _tokens(30 + _short_pass_rows(one_call))
    _assert_each_position_gets_one_token_passes_bits(one_call, tokens, threads)


@pytest.fixture
def bf16_held_one_call() -> nn.Module:
    """The tiny Phi-3 with bf16-held weights, its layers in one call, where a prompt's products
    over such weights run on AMX tiles."""
    kernels = own_kernels()
    if kernels is None or not kernels.bf16_prompts_on_tiles:
        pytest.skip("a prompt's fp32 products take AMX tiles only on CPUs with AMX-BF16")
    torch.manual_seed(0)
    model = _new_fp32_model(phi3=True)
    assert run_layers_in_one_call(model) == LAYERS
    return model


def test_a_bf16_held_prompt_runs_in_one_call_at_any_length(
    bf16_held_one_call: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    longer = _short_pass_rows(bf16_held_one_call) + 40  # than our vector kernel takes
    attention_calls = _count_attention_calls(monkeypatch)
    _hidden_states(bf16_held_one_call, [_tokens(longer)], prompt=True)
    assert attention_calls == []
    _hidden_states(bf16_held_one_call, [_tokens(longer)])  # not a prompt's: the layers' forward
    assert len(attention_calls) == LAYERS


def test_a_bf16_held_prompts_positions_get_the_same_bits_in_passes_of_any_width(
    bf16_held_one_call: nn.Module,
) -> None:
    # A prompt read after a reused prefix (a keystroke's few new tokens) must give what the
    # same prompt read at once gives: the tiles take a prompt's products at any width.
    tokens = _tokens(30 + _short_pass_rows(bf16_held_one_call) + 40)
    together = _hidden_states(bf16_held_one_call, [tokens[:, :30], tokens[:, 30:]], prompt=True)
    parts = [tokens[:, :30], tokens[:, 30:35], tokens[:, 35:36], tokens[:, 36:]]
    apart = _hidden_states(bf16_held_one_call, parts, prompt=True)
    assert torch.equal(together[1], torch.cat(apart[1:]))
    # Decode passes keep the vectors' products, whose sums round apart from the tiles'.
    decoded = _hidden_states(bf16_held_one_call, [tokens[:, :30], tokens[:, 30:35]])
    assert not torch.equal(decoded[1], apart[1])
    torch.testing.assert_close(decoded[1], apart[1], rtol=1e-5, atol=1e-5)


def _short_pass_rows(model: nn.Module) -> int:
    """The most rows of a pass that our fp32 kernel takes in `model` (as its weights' dtype)."""
    bounds = {
        short_pass_rows(module) for module in model.modules() if isinstance(module, nn.Linear)
    }
    (bound,) = bounds
    assert bound is not None
    return bound


def test_fp32_layers_without_our_fp32_products_keep_their_forward(seeded: None) -> None:
    assert run_layers_in_one_call(new_fp32_llama()) == 0


def test_layers_whose_products_are_not_shared_keep_their_forward(seeded: None) -> None:
    assert run_layers_in_one_call(new_int4_llama()) == 0


def test_other_attention_than_sdpa_keeps_the_layers_forward(seeded: None) -> None:
    model = _new_model(phi3=True)
    model.set_attn_implementation("eager")  # type: ignore[operator]
    assert run_layers_in_one_call(model) == 0
