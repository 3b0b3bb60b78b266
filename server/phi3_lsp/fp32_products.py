"""The linear layers of an fp32 model read their weights at memory speed in short passes.

A one-token pass of an fp32 model is nearly all matrix-vector products, bound by how fast their
weights are read: torch's kernel reads them at 10-23 GB/s on a 2-core AMD EPYC that delivers
~35, ours (`fp32_kernel.c`, for any x86-64 CPU with AVX2 and FMA) at 18-32.
`read_at_memory_speed` gives every fp32 `nn.Linear` a forward that takes passes of a few rows (a
decode pass and its drafted tokens) through our kernel, which gives each row the bits it gives
that row alone; longer passes (a prompt) keep torch's, which computes many rows faster. The
products differ from torch's in their last bits (the sums run in another order), as torch's own
one-row and many-row kernels differ from each other."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from phi3_lsp.cpu_kernels import Fp32Kernel

ROWS_AT_MOST = 16
"""Passes of up to this many rows take our kernel: a decode pass with its drafted tokens, a
short prompt. torch's kernel takes 2.4-3.4x our time for 2-5 rows of Phi-3-mini's fused
query-key-value projection, 1.2x for 16, and 0.4-0.9x for 64-500 (2 threads)."""


def read_at_memory_speed(model: nn.Module, kernel: Fp32Kernel) -> int:
    """Give the fp32 linear layers of `model` the short passes' forward; returns how many."""
    layers = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and _our_kernel_reads(module.weight):
            few_rows = functools.partial(_few_rows_forward, kernel, module, module.forward)
            module.forward = few_rows  # type: ignore[method-assign]  # this layer only
            layers += 1
    return layers


def reads_rows_alike(model: nn.Module) -> bool:
    """True when every linear layer of `model` has our forward: short passes then give each row
    the bits a one-row pass gives it (see `ROWS_AT_MOST`)."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    return bool(linears) and all(
        getattr(module.forward, "func", None) is _few_rows_forward for module in linears
    )


def _few_rows_forward(
    kernel: Fp32Kernel,
    layer: nn.Linear,
    other_forward: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
) -> torch.Tensor:
    rows = inputs.numel() // layer.in_features
    if (
        rows > ROWS_AT_MOST
        or inputs.shape[-1] != layer.in_features
        or inputs.dtype != torch.float32
        or torch.is_grad_enabled()  # our products have no gradient
    ):
        return other_forward(inputs)
    products = kernel.multiply(inputs.reshape(rows, -1), layer.weight)
    if layer.bias is not None:
        products += layer.bias
    return products.reshape(*inputs.shape[:-1], layer.out_features)


def _our_kernel_reads(weight: torch.Tensor) -> bool:
    return weight.dtype == torch.float32 and weight.is_contiguous() and weight.device.type == "cpu"
