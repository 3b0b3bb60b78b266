"""fp32 arithmetic for a model whose checkpoint holds some weights in bf16.

Every bf16 value widens to fp32 exactly, so a weight read a few rows at a time (an embedding's
lookups) or widened as it is read (our fp32 kernel's products) can stay bf16: the arithmetic is
the fp32 model's, in half the memory.
"""

from __future__ import annotations

import torch
from torch import nn


def to_fp32_except(model: nn.Module, keep: list[nn.Module]) -> None:
    """Every floating parameter and buffer of `model` in fp32, except the weights of `keep`."""
    weights = [(module, module.weight) for module in keep]
    for module, _ in weights:
        del module.weight  # out of the cast's reach (a tied weight: from both modules)
    model.float()
    for module, weight in weights:
        module.weight = weight


def outputs_in_fp32(embedding: nn.Embedding) -> None:
    """Make `embedding`, whose weight may be bf16, give its rows in fp32."""
    # A forward hook rather than a wrapping module: the tree prints as transformers prints it.
    embedding.register_forward_hook(_outputs_in_fp32)


def _outputs_in_fp32(_module: nn.Module, _inputs: object, outputs: torch.Tensor) -> torch.Tensor:
    return outputs.float()
