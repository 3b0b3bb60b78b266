"""The 4-bit weight format: codes in groups of 32 inputs, a bf16 scale and offset per group.

The scheme of llama.cpp's Q4_1, in the layout of torch's packed int4 CPU kernel, which
multiplies bf16 activations by it (see `quantize` for why this format).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

GROUP_SIZE = 32
"""Input values per scale and offset."""
_LEVELS = 15  # 4-bit codes are 0..15; the kernel subtracts 8 before scaling


class Int4Weight:
    """A weight matrix [out, in] as packed 4-bit codes with a bf16 scale and offset per group."""

    def __init__(self, packed: torch.Tensor, scales_and_zeros: torch.Tensor) -> None:
        self.packed = packed
        """uint8 [out, in / 2]: two codes a byte, in the layout of torch's CPU kernel."""
        self.scales_and_zeros = scales_and_zeros
        """bf16 [in / GROUP_SIZE, out, 2]."""
        self.out_features, self.in_features = packed.shape[0], packed.shape[1] * 2

    @classmethod
    def quantize(cls, weight: torch.Tensor) -> Int4Weight:
        """The nearest 4-bit form of `weight` (any float dtype)."""
        codes, scales_and_zeros = _quantize_groups(weight.detach())
        return cls(_pack(codes), scales_and_zeros)

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, torch.Tensor], prefix: str, shape: tuple[int, int]
    ) -> Int4Weight:
        """The weight `tensors()` stored under `prefix`, checked against `shape` [out, in]."""
        weight = cls(tensors[f"{prefix}.packed"], tensors[f"{prefix}.scales_and_zeros"])
        out_features, in_features = shape
        scales_shape = (in_features // GROUP_SIZE, out_features, 2)
        fits = (weight.out_features, weight.in_features) == shape
        if not fits or weight.scales_and_zeros.shape != scales_shape:
            raise ValueError(f"the stored 4-bit weight {prefix} does not fit a {shape} layer")
        return weight

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors that make this weight, named for `from_tensors`."""
        return {
            f"{prefix}.packed": self.packed,
            f"{prefix}.scales_and_zeros": self.scales_and_zeros,
        }

    def multiply(self, rows: torch.Tensor) -> torch.Tensor:
        """`rows @ weight.T` for bf16 rows [n, in]; the result [n, out] is bf16."""
        products: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.packed, GROUP_SIZE, self.scales_and_zeros
        )
        return products


def quantize_with_row_errors(weight: torch.Tensor) -> tuple[Int4Weight, torch.Tensor]:
    """The 4-bit form of `weight` and, per output row, the norm of what 4 bits lose of it."""
    codes, scales_and_zeros = _quantize_groups(weight.detach())
    out_features, in_features = codes.shape
    scales, zeros = scales_and_zeros.float().transpose(0, 1).unsqueeze(-2).unbind(-1)
    groups = codes.reshape(out_features, in_features // GROUP_SIZE, GROUP_SIZE).float()
    dequantized = groups.sub_(8).mul_(scales).add_(zeros).reshape(out_features, in_features)
    row_errors = dequantized.sub_(weight.detach().float()).norm(dim=1)
    return Int4Weight(_pack(codes), scales_and_zeros), row_errors


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
