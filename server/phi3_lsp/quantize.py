"""4-bit weights for the decoder layers: fewer bytes to read for every new token.

Decoding one token reads every weight once, so on a CPU its speed is set by memory bandwidth.
`quantize_to_int4` replaces each linear layer inside the decoder with an `Int4Linear`: its weight
in groups of 32 input values, each group stored as 4-bit codes with a bf16 scale and offset (the
scheme of llama.cpp's Q4_1), multiplied by torch's packed int4 kernel with bf16 activations.
That reads 6.4x fewer bytes than fp32 and, measured on a 2-core AVX2 CPU without native bf16,
runs Phi-3-mini's 3072x9216 matrix-vector product in 2.2 ms instead of 7.4 ms. torch's int8
weight kernel (one scale per output row) is 7x slower with fp32 activations; with bf16 ones it
matched this kernel on Phi-3-mini's and SmolLM2's layers (2.3 ms here), but one scale per row loses
more than one per 32 inputs: on SmolLM2 it kept fp32's greedy text on 8 of 17 reference
prompts, where int4 keeps 11.

The vocabulary projection keeps its full-precision weight: read in 4 bits alone, it changed the
greedy text of most reference prompts. It becomes a `ScreenedProjection` instead, which reads
the 4-bit copy for every token and the exact rows only for the few tokens that could be the
most likely (see `screened_projection`). Everything else is fp32, except the input embedding
and the vocabulary projection where a checkpoint has them in bf16 (Phi-3-mini's does): a token
reads only a few of their rows, which widen to fp32 exactly, so they stay bf16. That is the
same arithmetic in half the memory, without a cast at every load (Phi-3-mini's projection:
0.66 s here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from phi3_lsp.int4_weights import BYTES_PER_WEIGHT, GROUP_SIZE, PACKED_ROWS, Int4Weight
from phi3_lsp.precision import outputs_in_fp32, to_fp32_except
from phi3_lsp.screened_projection import ScreenedProjection

if TYPE_CHECKING:
    from phi3_lsp.shared_products import SharedProduct


class Int4Linear(nn.Module):
    """A linear layer whose weight is 4-bit codes in groups with a scale and offset each.

    Inputs of any float dtype are accepted; they are multiplied in bf16 (what the packed
    kernel takes) and the result is returned in the input's dtype.
    """

    def __init__(self, linear: nn.Linear, weight_int4: Int4Weight | None = None) -> None:
        """`linear` in 4 bits; `weight_int4` is its weight already quantized (e.g. cached)."""
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        # Plain tensors, neither parameters nor buffers: casts such as `model.float()` must
        # leave them alone (the kernel takes uint8 codes and bf16 scales only).
        self._own_weight: Int4Weight | None = weight_int4 or Int4Weight.quantize(linear.weight)
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), False)
        )
        self.shared_product: SharedProduct | None = None
        """Set by `share_products`: the product this layer takes its outputs from."""
        self.member = 0
        """This layer's place among the layers of `shared_product`."""

    @property
    def weight_int4(self) -> Int4Weight:
        """The 4-bit weight; a layer that shares a product gets a copy of its rows of it."""
        if self.shared_product is not None:
            return self.shared_product.weight_of(self.member)
        assert self._own_weight is not None
        return self._own_weight

    def share(self, product: SharedProduct, member: int) -> None:
        """Take outputs from `product`, which holds this layer's weight as member `member`."""
        self.shared_product, self.member, self._own_weight = product, member, None

    @property
    def quantized_parameters(self) -> int:
        """Weights the 4-bit codes stand for (they are not `parameters()`)."""
        return self.in_features * self.out_features

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.shared_product is not None:
            outputs = self.shared_product.take(self.member, inputs)
        else:
            outputs = self.weight_int4.multiply_inputs(inputs)
            outputs = outputs.reshape(*inputs.shape[:-1], self.out_features)
        return outputs if self.bias is None else outputs + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, bits=4, group_size={GROUP_SIZE}"
        )


def can_quantize(linear: nn.Linear) -> bool:
    """True when the packed kernel takes this layer's shape: inputs in whole groups, outputs in
    multiples of `PACKED_ROWS`. Other layers (a vocabulary of 32,002 with added tokens) stay
    in their float form."""
    return linear.in_features % GROUP_SIZE == 0 and linear.out_features % PACKED_ROWS == 0


def quantize_to_int4(model: nn.Module, stored: Mapping[str, torch.Tensor] | None = None) -> int:
    """Turn `model` into its int4 form in place; returns how many layers were quantized.

    Linear layers (except the vocabulary projection) become `Int4Linear`, the vocabulary
    projection a `ScreenedProjection`; all other floating parameters and buffers become fp32
    (bf16 weights of the input embedding and the screened projection stay bf16, the
    embedding's outputs fp32). Works from weights in any float dtype, so a bf16 checkpoint
    never needs a full fp32 copy in memory. With `stored`
    (what `int4_tensors` gave for the same checkpoint), the 4-bit weights are read from it
    instead of computed; a missing or misfit one raises KeyError or ValueError, possibly with
    part of the model converted.
    """
    output = vocabulary_projection(model)
    quantized = 0
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child is not output and can_quantize(child):
                weight = None
                if stored is not None:
                    prefix = f"{parent_name}.{name}" if parent_name else name
                    shape = (child.out_features, child.in_features)
                    weight = Int4Weight.from_tensors(stored, prefix, shape)
                setattr(parent, name, Int4Linear(child, weight))  # the old weight is freed here
                quantized += 1
    screened = output if isinstance(output, nn.Linear) and can_quantize(output) else None
    embedding = input_embedding(model)
    kept_in_bf16 = _bf16_row_readers(embedding, output, screened)
    to_fp32_except(model, keep=kept_in_bf16)
    if embedding is not None and embedding in kept_in_bf16:
        outputs_in_fp32(embedding)
    if screened is not None:
        name = _module_name(model, screened)
        screen = (
            None if stored is None else ScreenedProjection.stored_screen(stored, name, screened)
        )
        model.set_submodule(name, ScreenedProjection(screened, screen))
    return quantized


def int4_bytes(model: nn.Module) -> int:
    """Bytes the parameters of `model` (in any dtype, or on the meta device: only shapes count)
    take once `quantize_to_int4` has made its int4 form: at most, since an input embedding and
    a vocabulary projection that a checkpoint has in bf16 keep 2 bytes a weight."""
    output = vocabulary_projection(model)
    quantized = [
        module
        for module in model.modules()
        if isinstance(module, nn.Linear) and module is not output and can_quantize(module)
    ]
    quantized_ids = {id(module.weight) for module in quantized}
    fp32 = sum(p.numel() for p in model.parameters() if id(p) not in quantized_ids)
    four_bit = sum(module.weight.numel() for module in quantized)
    if isinstance(output, nn.Linear) and can_quantize(output):
        four_bit += output.weight.numel()  # the screen beside its full weight
    return round(4 * fp32 + BYTES_PER_WEIGHT * four_bit)


def _bf16_row_readers(
    embedding: nn.Embedding | None, output: nn.Module | None, screened: nn.Linear | None
) -> list[nn.Module]:
    """The input embedding and the vocabulary projection to be screened, those of them whose
    weight is bf16: a lookup and the screen's exact scores read a few rows, widened exactly."""
    tied = embedding is not None and getattr(output, "weight", None) is embedding.weight
    if tied and screened is None:
        return []  # the projection multiplies the whole weight in fp32
    return [
        module
        for module in (embedding, screened)
        if module is not None and module.weight.dtype == torch.bfloat16
    ]


def int4_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors `quantize_to_int4` made, by module name (its `stored` argument)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, Int4Linear):
            tensors.update(module.weight_int4.tensors(name))
        elif isinstance(module, ScreenedProjection):
            tensors.update(module.screen_tensors(name))
    return tensors


def _module_name(model: nn.Module, module: nn.Module) -> str:
    names: list[str] = [name for name, candidate in model.named_modules() if candidate is module]
    return names[0]


def input_embedding(model: nn.Module) -> nn.Embedding | None:
    """The token embedding of a transformers model (None for other modules)."""
    get_input_embeddings = getattr(model, "get_input_embeddings", None)
    embedding = get_input_embeddings() if callable(get_input_embeddings) else None
    return embedding if isinstance(embedding, nn.Embedding) else None


def vocabulary_projection(model: nn.Module) -> nn.Module | None:
    """The vocabulary projection of a transformers model (None for other modules)."""
    get_output_embeddings = getattr(model, "get_output_embeddings", None)
    output = get_output_embeddings() if callable(get_output_embeddings) else None
    return output if isinstance(output, nn.Module) else None
