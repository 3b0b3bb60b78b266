"""The linear layers of an fp32 model read their weights at memory speed in one-token passes.

A one-token pass of an fp32 model is nearly all matrix-vector products, bound by how fast their
weights are read: torch's kernel reads them at 10-23 GB/s on a 2-core AMD EPYC that delivers
~35, ours (`fp32_kernel.c`) at 18-32. `read_at_memory_speed` gives every fp32 `nn.Linear` a
forward that takes a one-row input through our kernel; every other pass (a prompt, drafted
tokens) keeps torch's, which computes many rows faster. The products differ from torch's in
their last bits (the sums run in another order), as torch's own one-row and many-row kernels
differ from each other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from phi3_lsp.cpu_kernels import CpuKernels


def read_at_memory_speed(model: nn.Module, kernels: CpuKernels) -> int:
    """Give the fp32 linear layers of `model` the one-row forward; returns how many."""
    layers = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight.dtype == torch.float32:
            one_row = functools.partial(_one_row_forward, kernels, module, module.forward)
            module.forward = one_row  # type: ignore[method-assign]  # this layer only
            layers += 1
    return layers


def _one_row_forward(
    kernels: CpuKernels,
    layer: nn.Linear,
    other_forward: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
) -> torch.Tensor:
    weight = layer.weight
    if (
        inputs.numel() != layer.in_features
        or inputs.dtype != torch.float32
        or not weight.is_contiguous()
        or weight.device.type != "cpu"
        or torch.is_grad_enabled()
    ):
        return other_forward(inputs)
    products = kernels.multiply_fp32(inputs.reshape(1, -1), weight)
    if layer.bias is not None:
        products += layer.bias
    return products.reshape(*inputs.shape[:-1], layer.out_features)
