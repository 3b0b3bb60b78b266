"""Decoder layers run by our kernel in one call each (see decoder_layer.c).

A pass through transformers' decoder layer is a few dozen torch calls, and where the weights read
at memory speed their Python and dispatch costs are much of a pass: on SmolLM2 a one-token pass
took ~8 ms for ~2 ms of 4-bit weights to read, and in fp32 ~24 ms of which ~13 ms were products.
`run_layers_in_one_call` gives every Llama- or Phi-3-style layer that our kernels can run (no bias,
no dropout, SiLU; 4-bit projections sharing or fusing their products, or fp32 ones whose short
passes take our fp32 kernel, fused or not) a forward that runs the whole layer in one call over our
KV cache with a causal mask: every pass of a 4-bit layer, and the passes of an fp32 layer short
enough for our fp32 kernel (32 rows for fp32 weights, 128 for bf16 ones, see `fp32_products`: a
decode pass and its drafted tokens, a short prompt), where a longer pass keeps products faster for
many rows (torch's, or AMX tiles; a prompt's passes over bf16-held weights on AMX run in one call
at any length, their products on the tiles). Every position gets the bits a one-token pass gives
it, as with row_attention (but, on CPUs with AMX, for the 4-bit products of a pass over more than
32 rows and a prompt's products over bf16-held weights: see int4_tiles.c and fp32_tiles.c); norms,
rotary embeddings and SiLU are computed in the kernel's own order, so the bits are not
transformers'. Any other pass runs the forward the layer had. Measured in one process, alternating
(2-core AMD EPYC): 4-bit decode passes of SmolLM2 11.8 -> 6.0 ms and of Phi-3-mini-sized layers 113
-> 56 ms, a 500-token SmolLM2 prompt read 0.42 -> 0.30 s, the same greedy text; fp32 one-token
passes over a ~500-token prompt, SmolLM2 29.6 -> 20.2 ms and Phi-3-mini-sized 288.8 -> 259.6 ms,
the same greedy text.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.activations import SiLUActivation
from transformers.models.llama.modeling_llama import LlamaDecoderLayer
from transformers.models.phi3.modeling_phi3 import Phi3DecoderLayer

from phi3_lsp.cpu_kernels import (
    HEAD_DIM_STEP,
    MAX_HEAD_DIM,
    CpuKernels,
    DecoderLayer,
    KernelWeight,
    LayerProduct,
    fits_fp32_tiles,
    in_features,
    own_kernels,
)
from phi3_lsp.fp32_products import short_pass_rows
from phi3_lsp.int4_weights import Int4Weight, own_kernel_for
from phi3_lsp.kv_cache import GrowingCache
from phi3_lsp.lean_layers import (
    drop_fast_way,
    fused_unbiased_without_dropout,
    residual_dropouts_drop_nothing,
    shares_unbiased_products,
    take_fast_way,
)
from phi3_lsp.row_attention import ROW_BY_ROW_ATTENTION, is_causal_pass, outruns_window

_VECTOR = 16
"""The kernel's element-wise steps take rows of a multiple of this many values."""


def every_layer_in_one_call(model: nn.Module) -> bool:
    """Whether every decoder layer of `model` has the one-call forward (`run_layers_in_one_call`).

    Its passes give each row the same bits on any thread count. A layer transformers runs does
    not: torch's element-wise functions (the activation) split a tensor among the threads, and
    the few values at the end of each share take another path (measured: SiLU's last bit differs
    between 1 and 3 threads where a pass holds more than 65,536 values)."""
    layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    in_one_call = sum(1 for module in model.modules() if module in _KERNEL_LAYERS)
    return isinstance(layers, int) and layers > 0 and in_one_call == layers


def kernel_layer(layer: nn.Module) -> KernelLayer | None:
    """How the one-call forward of `layer` runs it (None: the layer has none)."""
    return _KERNEL_LAYERS.get(layer)


_KERNEL_LAYERS: weakref.WeakKeyDictionary[nn.Module, KernelLayer] = weakref.WeakKeyDictionary()
"""The decoder layers given the one-call forward, and how it runs each."""


def run_layers_in_one_call(model: nn.Module) -> int:
    """Give the decoder layers our kernel can run the one-call forward; returns how many. Again
    for a model whose weights changed how they are held: the layers then read them anew."""
    attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
    kernels = own_kernels()
    if kernels is None or attention not in ("sdpa", ROW_BY_ROW_ATTENTION):
        return 0
    layers = 0
    for module in model.modules():
        kernel_layer = _kernel_layer(kernels, module)
        if kernel_layer is not None:
            if module in _KERNEL_LAYERS:
                drop_fast_way(module)  # the kernel's, and the weights it was given
            take_fast_way(module, functools.partial(_in_one_call, kernel_layer))
            _KERNEL_LAYERS[module] = kernel_layer
            layers += 1
    return layers


@dataclass(frozen=True)
class KernelLayer:
    """A decoder layer as the one-call way runs it; what a pass needs beside its inputs."""

    kernel: DecoderLayer
    layer_index: int
    rows_at_most: int | None
    """The longest pass the kernel takes (None: any)..."""
    prompts_of_any_length: bool
    """... but for a prompt's passes, which it takes at any length where their products run on
    AMX tiles: bf16-held weights (`CpuKernels.bf16_prompts_on_tiles`)."""
    sliding_window: int | None
    no_keys: torch.Tensor
    """[1, kv_heads, 0, head_dim] fp32: the shape and dtype of the layer's cache buffers."""

    def takes_pass(self, rows: int, tokens: int, reading_prompt: bool) -> bool:
        """Whether the kernel takes a causal pass of `rows` rows that ends at `tokens` tokens."""
        too_many = self.rows_at_most is not None and rows > self.rows_at_most
        if too_many and not (self.prompts_of_any_length and reading_prompt):
            return False
        return not outruns_window(self.sliding_window, tokens)

    def run(
        self, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], cache: GrowingCache
    ) -> None:
        """The layer over `hidden` [rows, hidden] (contiguous fp32, changed in place) with the
        rows' rotary cos and sin [rows, rotary_dim]: their keys and values go into `cache`
        after the positions it holds."""
        rows = len(hidden)
        cache_layer = cache.layer(self.layer_index)
        keys, values, cached = cache_layer.room_for(rows, self.no_keys, self.no_keys)
        self.kernel.run(hidden, rotary, keys[0], values[0], cached, cache.reading_prompt)
        cache_layer.hold(cached + rows)


def _kernel_layer(kernels: CpuKernels, layer: Any) -> KernelLayer | None:
    found = _products(layer)
    if found is None or not isinstance(_activation(layer), SiLUActivation):
        return None
    products, rows_at_most = found
    attention, config = layer.self_attn, layer.self_attn.config
    sizes = {
        "hidden": config.hidden_size,
        "heads": config.num_attention_heads,
        "kv_heads": config.num_key_value_heads,
        "head_dim": attention.head_dim,
        "intermediate": config.intermediate_size,
    }
    qkv, output, gate_up, _ = products
    fits = (
        sizes["hidden"] % _VECTOR == 0
        and sizes["intermediate"] % _VECTOR == 0
        and sizes["head_dim"] % HEAD_DIM_STEP == 0
        and sizes["head_dim"] <= MAX_HEAD_DIM
        and sizes["heads"] % sizes["kv_heads"] == 0
        and _out_features(qkv) == (sizes["heads"] + 2 * sizes["kv_heads"]) * sizes["head_dim"]
        and _in_features(output) == sizes["heads"] * sizes["head_dim"]
        and _out_features(gate_up) == 2 * sizes["intermediate"]
    )
    norms = (layer.input_layernorm, layer.post_attention_layernorm)
    if not fits or any(norm.weight.dtype != torch.float32 for norm in norms):
        return None
    kernel = DecoderLayer(
        kernels,
        (norms[0].weight.detach(), norms[1].weight.detach()),
        products,
        sizes,
        norm_epsilon=norms[0].variance_epsilon,
        scaling=attention.scaling,
    )
    return KernelLayer(
        kernel,
        attention.layer_idx,
        rows_at_most,
        kernels.bf16_prompts_on_tiles and all(map(_on_tiles, (w for p in products for w in p))),
        getattr(config, "sliding_window", None),
        torch.empty(1, sizes["kv_heads"], 0, sizes["head_dim"]),
    )


_Products = tuple[LayerProduct, LayerProduct, LayerProduct, LayerProduct]
"""A layer's products as the kernel reads them: queries-keys-values, output, gate-up, down."""


def _products(layer: Any) -> tuple[_Products, int | None] | None:
    """The layer's products, and the longest pass the kernel takes (None: any)."""
    int4 = _int4_products(layer)
    if int4 is None:
        return _fp32_products(layer)
    qkv, output, gate_up, down = ((_tensors(weight),) for weight in int4)
    return (qkv, output, gate_up, down), None


def _int4_products(layer: Any) -> tuple[Int4Weight, Int4Weight, Int4Weight, Int4Weight] | None:
    """The layer's 4-bit weights that our 4-bit kernel reads, each product's in one."""
    weights = _int4_weights(layer)
    if weights is None or any(own_kernel_for(w.out_features) is None for w in weights):
        return None
    return weights


def _int4_weights(layer: Any) -> tuple[Int4Weight, Int4Weight, Int4Weight, Int4Weight] | None:
    kind = type(layer)  # (not `type(layer) is`, which would narrow the modules' types)
    if kind is LlamaDecoderLayer and shares_unbiased_products(layer):
        attention, mlp = layer.self_attn, layer.mlp
        return (
            attention.q_proj.shared_product.weight,
            attention.o_proj.weight_int4,
            mlp.gate_proj.shared_product.weight,
            mlp.down_proj.weight_int4,
        )
    if kind is Phi3DecoderLayer and fused_unbiased_without_dropout(layer):
        return (
            layer.self_attn.qkv_proj.weight_int4,
            layer.self_attn.o_proj.weight_int4,
            layer.mlp.gate_up_proj.weight_int4,
            layer.mlp.down_proj.weight_int4,
        )
    return None


def _fp32_products(layer: Any) -> tuple[_Products, int] | None:
    """The weights of a layer whose linear layers take our fp32 kernel, none with a bias, and
    the most rows of a pass that all of them take it for."""
    kind = type(layer)
    products: tuple[tuple[nn.Linear, ...], ...]
    if kind is LlamaDecoderLayer:
        attention, mlp = layer.self_attn, layer.mlp
        products = (
            (attention.q_proj, attention.k_proj, attention.v_proj),
            (attention.o_proj,),
            (mlp.gate_proj, mlp.up_proj),
            (mlp.down_proj,),
        )
    elif kind is Phi3DecoderLayer and residual_dropouts_drop_nothing(layer):
        attention, mlp = layer.self_attn, layer.mlp
        products = (
            (attention.qkv_proj,),
            (attention.o_proj,),
            (mlp.gate_up_proj,),
            (mlp.down_proj,),
        )
    else:
        return None
    linears = [linear for product in products for linear in product]
    bounds = [short_pass_rows(linear) for linear in linears]
    if any(bound is None for bound in bounds) or any(linear.bias is not None for linear in linears):
        return None
    qkv, output, gate_up, down = (
        tuple(linear.weight.detach() for linear in product) for product in products
    )
    return (qkv, output, gate_up, down), min(bound for bound in bounds if bound is not None)


def _activation(layer: Any) -> object:
    return getattr(layer.mlp, "act_fn", None) or getattr(layer.mlp, "activation_fn", None)


def _tensors(weight: Int4Weight) -> KernelWeight:
    return weight.packed.contiguous(), weight.scales_and_zeros.contiguous()


def _on_tiles(weight: KernelWeight) -> bool:
    """Whether a prompt's products with the weight run on AMX tiles, where they are lent."""
    return isinstance(weight, torch.Tensor) and fits_fp32_tiles(weight)


def _out_features(product: LayerProduct) -> int:
    return sum(_shape(weight)[0] for weight in product)


def _in_features(product: LayerProduct) -> int:
    return _shape(product[0])[1]


def _shape(weight: KernelWeight) -> tuple[int, int]:
    """[out, in] of a weight: a 4-bit weight's codes pack two inputs a byte, Q4_1 and Q8_0
    blocks 32 inputs a block."""
    if isinstance(weight, tuple):
        return weight[0].shape[0], weight[0].shape[1] * 2
    return weight.shape[0], in_features(weight)


def _in_one_call(
    layer: KernelLayer,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
    kwargs: dict[str, Any],
) -> torch.Tensor | None:
    """The layer's output in one call of the kernel; None for a pass it cannot take."""
    cache = kwargs.get("cache")
    if (
        position_embeddings is None
        or not isinstance(cache, GrowingCache)
        or hidden_states.dim() != 3
        or hidden_states.shape[0] != 1
        or hidden_states.dtype != torch.float32
    ):
        return None
    rows = hidden_states.shape[1]
    tokens = cache.layer(layer.layer_index).get_seq_length() + rows
    # The mask alone: `takes_pass` knows the layer's sliding window.
    causal = is_causal_pass(attention_mask, rows, tokens, window=None)
    if not causal or not layer.takes_pass(rows, tokens, cache.reading_prompt):
        return None
    hidden = hidden_states.reshape(rows, -1).clone()
    cos, sin = position_embeddings
    layer.run(hidden, (cos[0], sin[0]), cache)
    return hidden.view(1, rows, -1)
