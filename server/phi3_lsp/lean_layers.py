"""One-token passes through Llama- and Phi-3-style decoder layers, without transformers'
per-call plumbing.

At one token, a decoder layer's work beside its 4-bit products is small, and much of it is the
plumbing around it: module calls, keyword plumbing, the attention-function lookup and its
wrappers. `lean_decoding` gives every `LlamaDecoderLayer` whose projections share their 4-bit
products (see `shared_products`), and every `Phi3DecoderLayer` with 4-bit fused projections, a
forward that, for a one-token pass without an attention mask, calls the functions transformers'
forward calls, in the same order, directly: the same bits (tested). A decode pass took ~10 %
less on SmolLM2 int4 (26.7 against 29.7 ms and 28.3 against 31.0 ms in two runs, medians of 6
answers of 50 tokens, the same text); Phi-3-mini's 32 layers, narrowed so that a pass is all
plumbing, took 11.6 against 13.3 ms a pass (medians of 200, alternating). Every other pass
(a prompt, drafted tokens, a masked one) runs transformers' own forward. Hooks on the layer
still run; its projections are called through their `forward` (they have no hooks). Where our
kernels run, `layer_kernel` runs these layers in one call instead, and this forward only takes
the passes it leaves.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm
from transformers.models.llama.modeling_llama import (
    apply_rotary_pos_emb as llama_rotary,
)
from transformers.models.phi3.modeling_phi3 import Phi3DecoderLayer, Phi3RMSNorm
from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb as phi3_rotary

from phi3_lsp.quantize import Int4Linear
from phi3_lsp.row_attention import ROW_BY_ROW_ATTENTION, attend_one_position

_LLAMA_PROJECTIONS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
_PHI3_PROJECTIONS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")

_ShortForward = Callable[[Any, torch.Tensor, tuple[torch.Tensor, torch.Tensor], Any], torch.Tensor]
FastWay = Callable[
    [torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None, dict[str, Any]],
    torch.Tensor | None,
]
"""A decoder layer's output for (hidden states, attention mask, position embeddings, the other
keyword arguments), or None for a pass it does not take."""


def lean_decoding(model: nn.Module) -> int:
    """Give the decoder layers that can take it the one-token forward; returns how many.

    Only for SDPA attention (as `attention_row_by_row` runs one token too): the short way calls
    transformers' SDPA function itself.
    """
    attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if attention not in ("sdpa", ROW_BY_ROW_ATTENTION):
        return 0
    layers = 0
    for module in model.modules():
        short = _short_forward_for(module)
        if short is not None:
            # The layer weakly, as `_FastWayForward` holds it.
            take_fast_way(module, functools.partial(_one_token_way, weakref.ref(module), short))
            layers += 1
    return layers


def take_fast_way(layer: nn.Module, fast_way: FastWay) -> None:
    """Give `layer` a forward that runs `fast_way`, and the forward it had for the passes
    `fast_way` leaves. Hooks on the layer still run."""
    layer.forward = _FastWayForward(fast_way, layer)  # type: ignore[method-assign]


def drop_fast_way(layer: nn.Module) -> None:
    """Give `layer` back the forward it had before its last `take_fast_way`."""
    forward = layer.__dict__.get("forward")
    if not isinstance(forward, _FastWayForward):
        return
    if forward.had is None:
        del layer.forward
    else:
        layer.forward = forward.had  # type: ignore[method-assign]


class _FastWayForward:
    """A decoder layer's forward: `fast_way` for the passes it takes, else the one it had."""

    __slots__ = ("_fast_way", "_layer", "had")

    def __init__(self, fast_way: FastWay, layer: nn.Module) -> None:
        self._fast_way = fast_way
        self.had: Callable[..., torch.Tensor] | None = layer.__dict__.get("forward")
        """A fast way taken before, or None: the forward of the layer's class."""
        # Weakly, not its bound forward: the layer holds this, and a cycle would keep a dropped
        # model's weights until a full garbage collection.
        self._layer = weakref.ref(layer)

    def __call__(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        output = self._fast_way(hidden_states, attention_mask, position_embeddings, kwargs)
        if output is not None:
            return output
        if self.had is not None:
            forward = self.had
        else:
            layer = self._layer()
            assert layer is not None  # it is calling this
            forward = type(layer).forward.__get__(layer)
        return forward(
            hidden_states,
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            **kwargs,
        )


def _short_forward_for(layer: nn.Module) -> _ShortForward | None:
    if type(layer) is LlamaDecoderLayer and shares_unbiased_products(layer):
        return _llama_one_token
    if type(layer) is Phi3DecoderLayer and fused_unbiased_without_dropout(layer):
        return _phi3_one_token
    return None


def shares_unbiased_products(layer: nn.Module) -> bool:
    """True when q, k, v and gate, up share their products (in that order) and no projection
    has a bias (the shared products hold weights only)."""
    projections = [layer.get_submodule(name) for name in _LLAMA_PROJECTIONS]
    if not all(isinstance(p, Int4Linear) and p.bias is None for p in projections):
        return False
    q, k, v, _, gate, up, _ = (p.shared_product for p in projections)
    return q is not None and q is k is v and gate is not None and gate is up


def fused_unbiased_without_dropout(layer: nn.Module) -> bool:
    """True when Phi-3's fused projections are 4-bit layers without a bias and its residual
    dropouts drop nothing (the short way leaves them out)."""
    projections = [layer.get_submodule(name) for name in _PHI3_PROJECTIONS]
    return all(
        isinstance(p, Int4Linear) and p.bias is None for p in projections
    ) and residual_dropouts_drop_nothing(layer)


def residual_dropouts_drop_nothing(layer: nn.Module) -> bool:
    """True when a Phi-3 layer's residual dropouts drop nothing: a way that leaves them out
    computes what its forward computes."""
    dropouts = [layer.get_submodule(name) for name in ("resid_attn_dropout", "resid_mlp_dropout")]
    return all(isinstance(d, nn.Dropout) and d.p == 0 for d in dropouts)


def _one_token_way(
    layer: weakref.ref[nn.Module],
    short_forward: _ShortForward,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
    kwargs: dict[str, Any],
) -> torch.Tensor | None:
    """The short way for one token after cached ones, without a mask; None for other passes."""
    cache = kwargs.get("cache")
    if (
        hidden_states.shape[:2] != (1, 1)
        or attention_mask is not None
        or cache is None
        or position_embeddings is None
    ):
        return None
    return short_forward(layer(), hidden_states, position_embeddings, cache)


def _llama_one_token(
    layer: Any,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    cache: Any,
) -> torch.Tensor:
    """What `LlamaDecoderLayer.forward` computes for one token, its siblings sharing products."""
    attention, mlp = layer.self_attn, layer.mlp
    normed = LlamaRMSNorm.forward(layer.input_layernorm, hidden_states)
    query, key, value = attention.q_proj.shared_product.products(normed)
    heads = (1, 1, -1, attention.head_dim)
    query, key = query.view(heads).transpose(1, 2), key.view(heads).transpose(1, 2)
    value = value.view(heads).transpose(1, 2)
    query, key = llama_rotary(query, key, *position_embeddings)
    hidden_states = hidden_states + _attended(attention, query, key, value, cache)
    normed = LlamaRMSNorm.forward(layer.post_attention_layernorm, hidden_states)
    gate, up = mlp.gate_proj.shared_product.products(normed)
    activated = (mlp.act_fn(gate) * up).view(1, 1, -1)
    result: torch.Tensor = hidden_states + mlp.down_proj.forward(activated)
    return result


def _phi3_one_token(
    layer: Any,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    cache: Any,
) -> torch.Tensor:
    """What `Phi3DecoderLayer.forward` computes for one token (its dropouts drop nothing)."""
    attention, mlp = layer.self_attn, layer.mlp
    normed = Phi3RMSNorm.forward(layer.input_layernorm, hidden_states)
    qkv = attention.qkv_proj.forward(normed)
    query_end = attention.config.num_attention_heads * attention.head_dim
    key_end = query_end + attention.num_key_value_heads * attention.head_dim
    heads = (1, 1, -1, attention.head_dim)
    query = qkv[..., :query_end].view(heads).transpose(1, 2)
    key = qkv[..., query_end:key_end].view(heads).transpose(1, 2)
    value = qkv[..., key_end:].view(heads).transpose(1, 2)
    query, key = phi3_rotary(query, key, *position_embeddings)  # type: ignore[no-untyped-call]
    hidden_states = hidden_states + _attended(attention, query, key, value, cache)
    normed = Phi3RMSNorm.forward(layer.post_attention_layernorm, hidden_states)
    gate, up = mlp.gate_up_proj.forward(normed).chunk(2, dim=-1)
    activated = up * mlp.activation_fn(gate)
    result: torch.Tensor = hidden_states + mlp.down_proj.forward(activated)
    return result


def _attended(
    attention: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cache: Any
) -> torch.Tensor:
    """The attention layer's output for one token: its key and value cached, the token
    attended over every cached one, the output projection."""
    key, value = cache.update(key, value, attention.layer_idx)
    attended = attend_one_position(attention, query, key, value, scaling=attention.scaling)
    output: torch.Tensor = attention.o_proj.forward(attended.reshape(1, 1, -1))
    return output
