"""The 4-bit weight format: codes in groups of 32 inputs, a bf16 scale and offset per group.

The scheme of llama.cpp's Q4_1, in the layout of torch's packed int4 CPU kernel, which
multiplies bf16 activations by it (see `quantize` for why this format). On CPUs with AVX-512
BF16 and VBMI our own kernel (`cpu_kernels`) takes every pass (a long one on AMX tiles where
the CPU has them). Elsewhere torch's kernel suits decoding (a few rows at a time), and a long
prompt's many rows go faster through matrix products on weights unpacked a slice at a time
(`DEQUANTIZED_FROM_ROWS`): in bf16 where the CPU multiplies bf16 natively, in fp32 on CPUs
without AVX-512.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional

from phi3_lsp.cpu_kernels import INPUT_GROUP, OUTPUT_BLOCK, CpuKernels, own_kernels

GROUP_SIZE = INPUT_GROUP
"""Input values per scale and offset."""
PACKED_ROWS = 16
"""torch packs 4-bit codes (`_convert_weight_to_int4pack_for_cpu`) for weights of a multiple of
this many output rows only; every weight here is packed by it (our kernel reads its layout)."""
BYTES_PER_WEIGHT = 0.5 + 2 * 2 / GROUP_SIZE
"""A 4-bit code, plus its share of the group's bf16 scale and offset."""
_LEVELS = 15  # 4-bit codes are 0..15; the kernel subtracts 8 before scaling
DEQUANTIZED_FROM_ROWS = 192
"""Rows from which `multiply` unpacks the weight instead of calling torch's kernel, where that is
faster (see `unpacked_dtype`) and our kernel does not run (which beats both at every length).

Measured on 2-core CPUs, SmolLM2 and Phi-3-mini layer shapes, against torch's kernel: fp32
products on AVX2 and bf16 ones on AVX-512 with native bf16 cost as much at ~128-192 rows, and
take 0.5-0.8x its time at 512; our kernel takes 0.58-0.66x the bf16 products' time at 512.
Drafted tokens (at most 16 rows) always use a kernel, which rounds each row as a one-row pass
does.
"""
_UNPACKED_SLICE_WEIGHTS = 1 << 20  # 4 MB of fp32 weights at a time: they stay in cache
_BF16_ROWS_STEP = 32
"""bf16 products take their rows in multiples of this (zeros added): oneDNN, which runs them,
keeps compiled code for every shape it meets, ~0.6 MB each, and prompts come in every length.
Unpadded, 320 lengths of 4 SmolLM2 layer shapes kept 650 MB; padded, 28 MB (16 MB with a step
of 64, whose extra rows made a server read 250-500-token prompts 12-28 % slower)."""


@dataclass(frozen=True)
class _PackedLayout:
    """How torch's kernel for one CPU capability packs codes (int4mm_kernel.cpp)."""

    block_rows: int
    """Output rows per block; a block is stored input by input, `block_rows / 2` bytes each."""
    nibble_order: Literal["halves", "pairs"]
    """"halves": byte i holds rows i (low nibble) and i + block_rows / 2 (high);
    "pairs": rows 2i (low) and 2i + 1 (high)."""
    unpacks_long_inputs: bool
    """Whether inputs of `DEQUANTIZED_FROM_ROWS` rows or more beat the kernel as fp32 products
    on weights unpacked to fp32 (bf16 products, where native, beat it on every layout)."""


_LAYOUTS = {
    # A weight whose rows end in a part block (16, 32 or 48 rows) packs that block in pairs:
    # only weights of whole blocks are unpacked or stacked (see `can_unpack`). The AVX-512
    # kernel read SmolLM2's 492-token prompts in 0.65-0.71 s where the unpacked fp32 products
    # took 0.94-1.12 s (2-core AMD EPYC).
    "AVX512": _PackedLayout(64, "halves", unpacks_long_inputs=False),
    "AVX2": _PackedLayout(32, "halves", unpacks_long_inputs=True),
    "DEFAULT": _PackedLayout(32, "pairs", unpacks_long_inputs=True),
}


class Int4Weight:
    """A weight matrix [out, in] as packed 4-bit codes with a bf16 scale and offset per group."""

    def __init__(self, packed: torch.Tensor, scales_and_zeros: torch.Tensor) -> None:
        """`scales_and_zeros` in either layout (see `scales_by_block`): held in this CPU's."""
        self.packed = packed
        """uint8 [out, in / 2]: two codes a byte, in the layout of torch's CPU kernel."""
        self.out_features, self.in_features = packed.shape[0], packed.shape[1] * 2
        self.scales_and_zeros = _held_scales(scales_and_zeros, self.out_features)
        """bf16 (scale, offset) pairs: [out / OUTPUT_BLOCK, in / GROUP_SIZE, OUTPUT_BLOCK, 2]
        where our kernel multiplies the weight (`scales_by_block`), else torch's kernel's
        [in / GROUP_SIZE, out, 2]."""

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
        packed = tensors[f"{prefix}.packed"]
        scales_and_zeros = tensors[f"{prefix}.scales_and_zeros"]
        out_features, in_features = shape
        groups = in_features // GROUP_SIZE
        scales_shapes = [
            (groups, out_features, 2),
            (out_features // OUTPUT_BLOCK, groups, OUTPUT_BLOCK, 2),
        ]
        fits = packed.shape == (out_features, in_features // 2)
        if not fits or tuple(scales_and_zeros.shape) not in scales_shapes:
            raise ValueError(f"the stored 4-bit weight {prefix} does not fit a {shape} layer")
        return cls(packed, scales_and_zeros)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors that make this weight, named for `from_tensors`."""
        return {
            f"{prefix}.packed": self.packed,
            f"{prefix}.scales_and_zeros": self.scales_and_zeros,
        }

    def output_rows(self, first: int, last: int) -> Int4Weight:
        """The weight of output rows `first:last`: a view of the codes and, when held by block
        and cut at blocks, of the scales, else a copy of them (the kernel takes them contiguous
        only: it reads a strided view wrongly)."""
        if self.scales_and_zeros.dim() == 4 and first % OUTPUT_BLOCK == last % OUTPUT_BLOCK == 0:
            scales_and_zeros = self.scales_and_zeros[first // OUTPUT_BLOCK : last // OUTPUT_BLOCK]
        else:
            scales_and_zeros = self.scales_by_group(first, last).contiguous()
        return Int4Weight(self.packed[first:last], scales_and_zeros)

    def scales_by_group(self, first: int = 0, last: int | None = None) -> torch.Tensor:
        """The scales and offsets of output rows `first:last` in torch's kernel's layout,
        [in / GROUP_SIZE, rows, 2] (a view where held so, else a copy)."""
        last = self.out_features if last is None else last
        held = self.scales_and_zeros
        if held.dim() == 3:
            return held[:, first:last]
        first_block, last_block = first // OUTPUT_BLOCK, -(-last // OUTPUT_BLOCK)
        rows = slice(first - first_block * OUTPUT_BLOCK, last - first_block * OUTPUT_BLOCK)
        return _by_group(held[first_block:last_block])[:, rows]

    def multiply_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """`inputs @ weight.T` for inputs [..., in] of any float dtype, multiplied in bf16 (what
        the packed kernel takes): rows [n, out] in the inputs' dtype."""
        rows = inputs.reshape(-1, self.in_features)
        kernel = own_kernel_for(self.out_features)
        if kernel is not None and rows.dtype in (torch.float32, torch.bfloat16):
            # Our kernel rounds fp32 rows and products itself, as `multiply` would.
            return kernel.multiply_int4(rows, self.packed, self.scales_and_zeros)
        return self.multiply(rows.to(torch.bfloat16)).to(inputs.dtype)

    def multiply(self, rows: torch.Tensor) -> torch.Tensor:
        """`rows @ weight.T` for bf16 rows [n, in]; the result [n, out] is bf16."""
        kernel = own_kernel_for(self.out_features)
        if kernel is not None:
            return kernel.multiply_int4(rows, self.packed, self.scales_and_zeros)
        if len(rows) >= DEQUANTIZED_FROM_ROWS:
            dtype = unpacked_dtype(self.out_features)
            if dtype is not None:
                return self.multiply_unpacked(rows, dtype)
        products: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.packed, GROUP_SIZE, self.scales_and_zeros
        )
        return products

    def multiply_unpacked(self, rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """What the kernel computes (sums of rows times unpacked weights, rounded to bf16), as
        matrix products in `dtype` over slices of output rows (see `can_unpack`).

        fp32 gives the kernel's sums in another order. bf16 also rounds each unpacked weight to
        bf16: measured on a Phi-3-mini-sized layer, the outputs' error to the exact product grows
        from 1.7e-3 (the kernel's rounding to bf16) to 2.4e-3 of their norm.
        """
        inputs = rows.to(dtype)
        if dtype == torch.bfloat16:
            inputs = functional.pad(inputs, (0, 0, 0, -len(rows) % _BF16_ROWS_STEP))
        products = torch.empty(len(rows), self.out_features, dtype=torch.bfloat16)
        block = _layout_or_error().block_rows
        step = max(block, _UNPACKED_SLICE_WEIGHTS // self.in_features // block * block)
        for first in range(0, self.out_features, step):
            last = min(self.out_features, first + step)
            sums = inputs @ self._unpacked(first, last).to(dtype).T
            products[:, first:last] = sums[: len(rows)]
        return products

    def _unpacked(self, first: int, last: int) -> torch.Tensor:
        """Output rows `first:last` of the weight in fp32, as the kernel reads them."""
        codes = unpack_codes(self.packed[first:last], self.in_features)
        groups = codes.view(last - first, self.in_features // GROUP_SIZE, GROUP_SIZE).float()
        scales, zeros = self.scales_by_group(first, last).float().unbind(-1)
        scales, zeros = scales.T.unsqueeze(-1), zeros.T.unsqueeze(-1)
        # (code - 8) * scale + zero as the kernel computes it: the product is exact in fp32
        # (4 bits times bf16's 8), so only the sum rounds, in both.
        return groups.sub_(8).mul_(scales).add_(zeros).view(last - first, self.in_features)


def stacked(weights: Sequence[Int4Weight]) -> Int4Weight | None:
    """One weight whose output rows are those of `weights` in turn, or None when this CPU's
    packed layout is not known to keep whole blocks of output rows apart (see `can_unpack`)."""
    in_features = weights[0].in_features
    if any(w.in_features != in_features or not can_unpack(w.out_features) for w in weights):
        return None
    held = [w.scales_and_zeros for w in weights]
    if all(scales.dim() == 4 for scales in held):
        scales_and_zeros = torch.cat(held)
    else:
        scales_and_zeros = torch.cat([w.scales_by_group() for w in weights], dim=1)
    return Int4Weight(torch.cat([w.packed for w in weights]), scales_and_zeros)


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


def can_unpack(out_features: int) -> bool:
    """True when `unpack_codes` reads this CPU's layout of a weight with `out_features` rows:
    a known layout, in whole blocks (which also keeps the rows of stacked weights apart)."""
    layout = _layout()
    return layout is not None and out_features % layout.block_rows == 0


def unpack_codes(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """The codes [out, in] that were packed into `packed` (see `can_unpack`)."""
    layout = _layout_or_error()
    blocks = packed.view(-1, in_features, layout.block_rows // 2)
    low, high = blocks & 0xF, blocks >> 4
    if layout.nibble_order == "halves":
        codes = torch.cat([low, high], dim=-1)
    else:
        codes = torch.stack([low, high], dim=-1).flatten(-2)
    return codes.transpose(1, 2).reshape(-1, in_features)


def unpacked_dtype(out_features: int) -> torch.dtype | None:
    """The dtype in which inputs of `DEQUANTIZED_FROM_ROWS` rows or more are multiplied by a
    weight of `out_features` rows unpacked, or None where the kernel is faster."""
    layout = _layout()
    if layout is None or not can_unpack(out_features):
        return None
    if has_native_bf16():
        return torch.bfloat16
    return torch.float32 if layout.unpacks_long_inputs else None


def scales_by_block(out_features: int) -> bool:
    """Whether a weight of `out_features` rows holds its scales and offsets block by block,
    [out / OUTPUT_BLOCK, in / GROUP_SIZE, OUTPUT_BLOCK, 2]: where our kernel multiplies it, which
    then reads them in one stream with the codes (int4_codes.h's `scales_of`). Elsewhere they
    are in torch's kernel's layout, group by group."""
    return own_kernel_for(out_features) is not None


def _held_scales(scales_and_zeros: torch.Tensor, out_features: int) -> torch.Tensor:
    """`scales_and_zeros`, given in either layout, in the one a weight of `out_features` rows
    holds here (a stored weight comes in it; one stored by another kind of CPU is turned)."""
    by_block = scales_and_zeros.dim() == 4
    if by_block == scales_by_block(out_features):
        return scales_and_zeros
    return _by_group(scales_and_zeros) if by_block else _by_block(scales_and_zeros)


def _by_block(scales_and_zeros: torch.Tensor) -> torch.Tensor:
    groups, out_features, _ = scales_and_zeros.shape
    blocks = scales_and_zeros.reshape(groups, out_features // OUTPUT_BLOCK, OUTPUT_BLOCK, 2)
    return blocks.transpose(0, 1).contiguous()


def _by_group(scales_and_zeros: torch.Tensor) -> torch.Tensor:
    blocks, groups, rows, _ = scales_and_zeros.shape
    return scales_and_zeros.transpose(0, 1).reshape(groups, blocks * rows, 2)


def own_kernel_for(out_features: int) -> CpuKernels | None:
    """Our kernels (`cpu_kernels`) where their 4-bit one reads this CPU's layout of a weight
    with `out_features` rows, else None: torch's kernel."""
    if _layout() is not _LAYOUTS["AVX512"] or out_features % OUTPUT_BLOCK != 0:
        return None
    return own_kernels()


@functools.cache
def has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX-512 BF16 or AMX), several times
    faster than fp32: 770-930 against 150-200 GFLOP/s on a 2-core AMD EPYC, layer shapes of
    SmolLM2 and Phi-3-mini at 256-1,494 rows."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def _layout() -> _PackedLayout | None:
    return _LAYOUTS.get(torch.backends.cpu.get_cpu_capability())


def _layout_or_error() -> _PackedLayout:
    layout = _layout()
    if layout is None:
        raise ValueError("this CPU's packed 4-bit layout is not known (see can_unpack)")
    return layout


def _pack(codes: torch.Tensor) -> torch.Tensor:
    packed: torch.Tensor = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    return packed
