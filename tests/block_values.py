"""fp32 values as a checkpoint dequantized from GGUF's Q4_1 or Q8_0 holds them."""

from __future__ import annotations

import torch

BLOCK = 32


def q4_1_values(out_features: int, in_features: int, seed: int = 0) -> torch.Tensor:
    """A weight [out, in] whose every block of 32 inputs is d * q + m in fp32: d and m fp16
    values, q 0-15 with both ends in each block, as Q4_1 quantizes."""
    generator = torch.Generator().manual_seed(seed)
    blocks = (out_features, in_features // BLOCK, 1)
    d = (torch.rand(blocks, generator=generator) * 0.01 + 1e-4).half().float()
    m = (-torch.rand(blocks, generator=generator) * 0.08).half().float()
    q = torch.randint(0, 16, (out_features, in_features // BLOCK, BLOCK), generator=generator)
    q[..., 0], q[..., 1] = 0, 15
    return (q.float() * d + m).reshape(out_features, in_features)


def q8_0_values(out_features: int, in_features: int, seed: int = 0) -> torch.Tensor:
    """A weight [out, in] whose every block of 32 inputs is d * q in fp32: d an fp16 value, q
    -127 to 127 with 127 or -127 in each block, as Q8_0 quantizes."""
    generator = torch.Generator().manual_seed(seed)
    blocks = (out_features, in_features // BLOCK, 1)
    d = (torch.rand(blocks, generator=generator) * 0.001 + 1e-5).half().float()
    q = torch.randint(-127, 128, (out_features, in_features // BLOCK, BLOCK), generator=generator)
    q[..., 5] = 127 * torch.where(torch.rand(blocks[:2], generator=generator) < 0.5, -1, 1)
    return (q.float() * d).reshape(out_features, in_features)
