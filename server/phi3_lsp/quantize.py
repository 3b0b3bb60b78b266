"""4-bit weights for the decoder layers: fewer bytes to read for every new token.

Decoding one token reads every weight once, so on a CPU its speed is set by memory bandwidth.
`quantize_to_int4` replaces each linear layer inside the decoder with an `Int4Linear`: its weight
in groups of 32 input values, each group stored as 4-bit codes with a bf16 scale and offset (the
scheme of llama.cpp's Q4_1), multiplied by torch's packed int4 kernel with bf16 activations.
That reads 8x fewer bytes than fp32 and, measured on an AVX2 CPU without native bf16, runs a
3072x9216 matrix-vector product in 0.8 ms instead of 5.5 ms; torch's int8 weight kernel was
slower than fp32 there.

The vocabulary projection stays in fp32: in 4 bits it changed the greedy text of most
reference prompts. Its weight is stored transposed instead, a layout whose matrix-vector
product MKL runs about twice as fast. Everything else (embeddings, norms) is fp32.
"""

from __future__ import annotations

import torch
from torch import nn

GROUP_SIZE = 32
"""Input values per scale and offset."""
_LEVELS = 15  # 4-bit codes are 0..15; the kernel subtracts 8 before scaling


class Int4Linear(nn.Module):
    """A linear layer whose weight is 4-bit codes in groups with a scale and offset each.

    Inputs of any float dtype are accepted; they are multiplied in bf16 (what the packed
    kernel takes) and the result is returned in the input's dtype.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        codes, scales_and_zeros = _quantize_groups(linear.weight.detach())
        # Plain tensors, neither parameters nor buffers: casts such as `model.float()` must
        # leave them alone (the kernel takes uint8 codes and bf16 scales only).
        self.packed_weight: torch.Tensor = _pack(codes)
        self.scales_and_zeros: torch.Tensor = scales_and_zeros
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), False)
        )

    @property
    def quantized_parameters(self) -> int:
        """Weights the 4-bit codes stand for (they are not `parameters()`)."""
        return self.in_features * self.out_features

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs.reshape(-1, self.in_features).to(torch.bfloat16)
        products: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.packed_weight, GROUP_SIZE, self.scales_and_zeros
        )
        outputs = products.to(inputs.dtype)
        outputs = outputs.reshape(*inputs.shape[:-1], self.out_features)
        return outputs if self.bias is None else outputs + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, bits=4, group_size={GROUP_SIZE}"
        )


def can_quantize(linear: nn.Linear) -> bool:
    """True when the packed kernel takes this layer's shape."""
    return linear.in_features % GROUP_SIZE == 0 and linear.out_features % 2 == 0


def quantize_to_int4(model: nn.Module) -> int:
    """Turn `model` into its int4 form in place; returns how many layers were quantized.

    Linear layers (except the vocabulary projection) become `Int4Linear`; all other floating
    parameters and buffers become fp32. Works from weights in any float dtype, so a bf16
    checkpoint never needs a full fp32 copy in memory.
    """
    output = _output_layer(model)
    quantized = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child is not output and can_quantize(child):
                setattr(parent, name, Int4Linear(child))  # the old weight is freed here
                quantized += 1
    model.float()
    if isinstance(output, nn.Linear):
        _store_transposed(output.weight)
    return quantized


def _output_layer(model: nn.Module) -> nn.Module | None:
    """The vocabulary projection of a transformers model (None for other modules)."""
    get_output_embeddings = getattr(model, "get_output_embeddings", None)
    output = get_output_embeddings() if callable(get_output_embeddings) else None
    return output if isinstance(output, nn.Module) else None


def _quantize_groups(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """4-bit codes [out, in] and bf16 scales and offsets [in / GROUP_SIZE, out, 2]."""
    out_features, in_features = weight.shape
    # One fp32 copy, then in-place steps: Phi-3-mini has 3.6 billion weights to go through.
    groups = weight.reshape(out_features, in_features // GROUP_SIZE, GROUP_SIZE).to(
        torch.float32, copy=True
    )
    low, high = torch.aminmax(groups, dim=-1, keepdim=True)
    # Rounded to bf16 before the codes are chosen, so the codes fit the scales the kernel uses.
    scales = ((high - low) / _LEVELS).clamp_(min=torch.finfo(torch.bfloat16).tiny)
    scales = scales.to(torch.bfloat16).float()
    # The kernel computes (code - 8) * scale + zero; zero is the group's middle value.
    zeros = (low + 8 * scales).to(torch.bfloat16).float()
    codes = groups.sub_(zeros - 8 * scales).div_(scales).round_().clamp_(0, _LEVELS)
    scales_and_zeros = torch.cat([scales, zeros], dim=-1).transpose(0, 1).contiguous()
    return (
        codes.to(torch.int32).reshape(out_features, in_features),
        scales_and_zeros.to(torch.bfloat16),
    )


def _pack(codes: torch.Tensor) -> torch.Tensor:
    packed: torch.Tensor = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    return packed


def _store_transposed(weight: torch.Tensor) -> None:
    """Keep the same values and Parameter (tied embeddings stay tied) in [in, out] memory order.

    `F.linear` multiplies by `weight.t()`, which is then contiguous: the fast matrix-vector layout.
    """
    weight.data = weight.data.t().contiguous().t()
