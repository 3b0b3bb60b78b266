"""Passes through a decoder whose every layer our kernel runs, layer after layer in one loop.

Where every decoder layer runs in one call of our kernel (`layer_kernel`), a short pass is
mostly Python around those calls. Measured on a 2-core Xeon, SmolLM2: a 4-bit one-token pass
took 8.0 ms, 4.1 ms of it in the kernel, ~1.4 ms in the layers' module calls and their one-call
forward, ~1 ms more in transformers' model forward (its causal mask, its keyword and output
plumbing); an fp32 one took 17.9 ms, 8.2 ms in the kernel, 2.5 ms in the layers' calls.
`run_stack_in_one_go` gives a Llama or Phi-3 model's decoder (embedding, layers, final norm) a
forward that, for a pass every layer's kernel takes, embeds the tokens, runs each layer's kernel
in turn on one buffer and applies the final norm: the calls the layers' one-call forward makes,
on the same values, so the same bits (tested): one-token passes 7.1-9.2 -> 6.6-8.2 ms (int4)
and 17.9-20.1 -> 16.5-18.4 ms (fp32). Hooks registered before a layer still run before it (a
stopped request's check, see `stoppable_passes`); a pass with hooks after a layer (a prompt's
progress), or with anything but tokens and our cache, runs the decoder's own forward.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_modules
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.llama.modeling_llama import LlamaModel
from transformers.models.phi3.modeling_phi3 import Phi3Model

from phi3_lsp.kv_cache import GrowingCache
from phi3_lsp.layer_kernel import KernelLayer, every_layer_in_one_call, kernel_layer

_CACHE_NAMES = ("cache", "past_key_values")
"""The decoder's cache argument (and output field): transformers 5.24 renamed the second."""
_PLAIN_ARGUMENTS = {"input_ids", "attention_mask", "position_ids", "inputs_embeds", "use_cache"}
_UNSET_ARGUMENTS = ("attention_mask", "position_ids", "inputs_embeds")
"""Arguments a pass in one go leaves to the decoder's own forward when given: a padding mask,
positions other than the cache's next ones, embeddings instead of tokens."""


def run_stack_in_one_go(model: nn.Module) -> bool:
    """Give the decoder of `model` (a Llama or Phi-3 causal LM whose every layer runs in one
    call) the forward that runs its layers in one loop; returns whether it got it."""
    decoder = getattr(model, "model", None)
    if type(decoder) not in (LlamaModel, Phi3Model) or not every_layer_in_one_call(model):
        return False
    assert isinstance(decoder, nn.Module)
    decoder.forward = _StackForward(decoder)  # type: ignore[method-assign]
    return True


class _StackForward:
    """A decoder's forward: its layers' kernels in one loop where they take the pass, else the
    forward of the decoder's class."""

    __slots__ = ("_decoder",)

    def __init__(self, decoder: nn.Module) -> None:
        # Weakly: the decoder holds this, and a cycle would keep a dropped model's weights until
        # a full garbage collection.
        self._decoder = weakref.ref(decoder)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        decoder = self._decoder()
        assert decoder is not None  # it is calling this
        output = None if args else _in_one_go(decoder, kwargs)
        if output is not None:
            return output
        return type(decoder).forward(decoder, *args, **kwargs)


def _in_one_go(decoder: Any, kwargs: dict[str, Any]) -> BaseModelOutputWithPast | None:
    """The decoder's output from its layers' kernels in one loop; None for a pass they do not
    all take (nothing has run then)."""
    cache_name = next((name for name in _CACHE_NAMES if name in kwargs), None)
    input_ids = kwargs.get("input_ids")
    if (
        cache_name is None
        or not isinstance(cache := kwargs[cache_name], GrowingCache)
        or set(kwargs) - {cache_name} - _PLAIN_ARGUMENTS
        or any(kwargs.get(name) is not None for name in _UNSET_ARGUMENTS)
        or kwargs.get("use_cache") is not True
        or not isinstance(input_ids, torch.Tensor)
        or input_ids.dim() != 2
        or input_ids.shape[0] != 1
    ):
        return None
    # (Not `layers[:count]`: slicing a ModuleList builds another, ~0.1 ms a pass.)
    layers = list(decoder.layers)[: decoder.config.num_hidden_layers]
    kernels = [kernel_layer(layer) for layer in layers]
    rows = input_ids.shape[1]
    held = cache.get_seq_length()
    if any(
        kernel is None or not kernel.takes_pass(rows, held + rows, cache.reading_prompt)
        for kernel in kernels
    ) or any(map(_hooked_after, layers)):
        return None
    hidden = decoder.embed_tokens(input_ids)  # (a bf16 embedding's hooks give fp32 rows)
    if hidden.dtype != torch.float32:
        return None
    hidden = hidden.contiguous()
    positions = torch.arange(held, held + rows).unsqueeze(0)
    cos, sin = decoder.rotary_emb(hidden, position_ids=positions)
    rows_of_hidden = hidden.view(rows, -1)  # the kernels change it in place
    for layer, kernel in zip(layers, kernels, strict=True):
        _run_hooks_before(layer, hidden)
        assert isinstance(kernel, KernelLayer)  # (checked above)
        kernel.run(rows_of_hidden, (cos[0], sin[0]), cache)
    output: dict[str, Any] = {"last_hidden_state": decoder.norm(hidden), cache_name: cache}
    return BaseModelOutputWithPast(**output)


def _hooked_after(layer: nn.Module) -> bool:
    """Whether a call of `layer` would run hooks after it, or hooks before it that take its
    keyword arguments (those the loop does not run)."""
    return bool(
        layer._forward_hooks
        or layer._forward_pre_hooks_with_kwargs
        or torch_modules._global_forward_hooks
        or torch_modules._global_forward_pre_hooks
    )


def _run_hooks_before(layer: nn.Module, hidden: torch.Tensor) -> None:
    """Run the hooks registered before `layer`, as its call would (they may raise to stop)."""
    for hook in layer._forward_pre_hooks.values():
        if hook(layer, (hidden,)) is not None:
            raise RuntimeError(f"a hook before {type(layer).__name__} changes its input")
