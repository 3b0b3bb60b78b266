"""A decoder whose every layer runs in one call, its layers run in one loop: the bits the
layers' own calls give, a stop between two layers, and the decoder's own forward for the
passes the loop leaves."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from phi3_lsp.cpu_kernels import own_fp32_kernel
from phi3_lsp.fp32_products import read_at_memory_speed
from phi3_lsp.kv_cache import GrowingCache, prompt_pass
from phi3_lsp.layer_kernel import run_layers_in_one_call
from phi3_lsp.layer_stack import run_stack_in_one_go
from phi3_lsp.prompt_progress import PromptProgress
from phi3_lsp.stoppable_passes import LayerStops, PassStopped
from tiny_llama import (
    LAYERS,
    VOCABULARY,
    needs_layers_in_one_call,
    new_fp32_llama,
    new_int4_phi3,
    new_shared_int4_llama,
)

pytestmark = needs_layers_in_one_call()


def _fp32_llama() -> nn.Module:
    model = new_fp32_llama()
    kernel = own_fp32_kernel()
    assert kernel is not None
    read_at_memory_speed(model, kernel)
    return model


@pytest.fixture(
    params=[new_shared_int4_llama, new_int4_phi3, _fp32_llama],
    ids=["int4-llama", "int4-phi3", "fp32-llama"],
)
def stacked(seeded: None, request: pytest.FixtureRequest) -> nn.Module:
    """A tiny model whose layers run in one call, and its decoder's layers in one loop."""
    model: nn.Module = request.param()
    assert run_layers_in_one_call(model) == LAYERS
    assert run_stack_in_one_go(model)
    return model


def _tokens(count: int) -> list[int]:
    generator = torch.Generator().manual_seed(count)
    return torch.randint(0, VOCABULARY, (count,), generator=generator).tolist()


def _logits(
    model: nn.Module, passes: list[list[int]], in_one_loop: bool | list[bool] = True
) -> list[torch.Tensor]:
    """The logits of each pass, fed one after the other over one cache (the first as a
    prompt's), each in one loop or through the decoder's own forward as `in_one_loop` says."""
    ways = in_one_loop if isinstance(in_one_loop, list) else [in_one_loop] * len(passes)
    decoder = _decoder(model)
    cache = GrowingCache()
    logits = []
    with torch.inference_mode():
        for number, (ids, way) in enumerate(zip(passes, ways, strict=True)):
            stack = None if way else decoder.__dict__.pop("forward")
            try:
                with prompt_pass(cache) if number == 0 else contextlib.nullcontext():
                    output = model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
            finally:
                if stack is not None:
                    decoder.forward = stack
            logits.append(output.logits[0].clone())
    return logits


def _layers_forward_calls(model: nn.Module, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The indices of the decoder layers whose forward runs from now on, in call order."""
    calls: list[int] = []
    for index, layer in enumerate(_decoder(model).layers):
        forward = layer.forward

        def counted(
            *args: Any, _forward: Callable[..., Any] = forward, _i: int = index, **kw: Any
        ) -> Any:
            calls.append(_i)
            return _forward(*args, **kw)

        monkeypatch.setattr(layer, "forward", counted)
    return calls


def _decoder(model: nn.Module) -> Any:
    """The embedding, decoder layers and final norm of a causal LM."""
    return model.model


def _passes() -> list[list[int]]:
    tokens = _tokens(30)
    # A prompt, one-token passes, a pass checking drafted tokens.
    return [tokens[:20], tokens[20:21], tokens[21:22], tokens[22:30]]


@pytest.mark.parametrize("prompt_in_one_loop", [True, False])
def test_passes_in_one_loop_give_the_layers_own_calls_bits(
    stacked: nn.Module, prompt_in_one_loop: bool
) -> None:
    # Also after a prompt read layer by layer: the positions go on from the cache's.
    passes = _passes()
    in_one_loop = _logits(stacked, passes, [prompt_in_one_loop, *[True] * (len(passes) - 1)])
    layer_by_layer = _logits(stacked, passes, in_one_loop=False)
    for got, wanted in zip(in_one_loop, layer_by_layer, strict=True):
        assert torch.equal(got, wanted)


def test_passes_in_one_loop_call_no_layer(
    stacked: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _layers_forward_calls(stacked, monkeypatch)
    _logits(stacked, _passes())
    assert calls == []


def test_a_pass_with_padding_or_hooks_after_the_layers_calls_every_layer(
    stacked: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _layers_forward_calls(stacked, monkeypatch)
    tokens = _tokens(12)
    padding = torch.ones(1, 12, dtype=torch.long)
    padding[0, :3] = 0
    with torch.inference_mode():
        stacked(input_ids=torch.tensor([tokens]), attention_mask=padding, cache=GrowingCache())
    assert calls == list(range(LAYERS))
    # A prompt's progress is reported after every layer.
    read: list[int] = []
    with PromptProgress(stacked).pass_over(lambda done, total: read.append(done), 0, 12, 12):
        _logits(stacked, [tokens])
    assert calls == [*range(LAYERS), *range(LAYERS)]
    assert read[-1] == 12


def test_a_stop_ends_a_pass_in_one_loop_between_two_layers(stacked: nn.Module) -> None:
    stops = LayerStops(stacked)
    event = threading.Event()
    cache = GrowingCache()
    with torch.inference_mode():
        stacked(input_ids=torch.tensor([_tokens(5)]), cache=cache, use_cache=True)
        # The request is stopped while the first layer runs (its check came before).
        _decoder(stacked).layers[0].register_forward_pre_hook(lambda *_: event.set())
        with stops.watching(event), pytest.raises(PassStopped):
            stacked(input_ids=torch.tensor([[7]]), cache=cache, use_cache=True)
    # The first layer ran; the stop was seen before the second.
    assert [cache.layer(i).get_seq_length() for i in range(LAYERS)] == [6, *[5] * (LAYERS - 1)]
