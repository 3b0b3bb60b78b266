"""How fast this process reads its model's weights: the floor under every decode pass.

A one-token pass reads each weight it multiplies once, so it cannot take less time than those
bytes take to stream from memory. How fast they stream depends on the moment as much as on the
machine: on a 2-core AMD EPYC guest, the same weights in the same process read at 35.6 GB/s and,
a minute later, 58.5 GB/s. A read of the weights themselves, in the process that decodes with
them and right beside its passes, gives the speed that compares with them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from phi3_lsp.quantize import Int4Linear, input_embedding, vocabulary_projection

TRIES = 3
"""Reads of every weight; the fastest counts (the first can meet pages not yet in memory)."""


@dataclass(frozen=True)
class WeightReads:
    """The fastest of `tries` reads of the model's weights (all but the input embeddings)."""

    bytes_read: int
    seconds: float
    tries: int

    @property
    def bytes_per_second(self) -> float:
        return self.bytes_read / self.seconds

    def to_json(self) -> dict[str, object]:
        """The `phi3.measureWeightReads` result in docs/protocol.md."""
        return {
            "bytesRead": self.bytes_read,
            "seconds": self.seconds,
            "bytesPerSecond": self.bytes_per_second,
            "tries": self.tries,
        }


def time_weight_reads(model: nn.Module, tries: int = TRIES) -> WeightReads:
    """Read every weight of `model` `tries` times (summing it, on torch's threads)."""
    tensors = list(_weights_read_by_a_pass(model))
    readable = [_as_wide_words(tensor) for tensor in tensors]
    fastest = float("inf")
    with torch.inference_mode():
        for _ in range(tries):
            started = time.perf_counter()
            for tensor in readable:
                tensor.sum()
            fastest = min(fastest, time.perf_counter() - started)
    read = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    return WeightReads(bytes_read=read, seconds=fastest, tries=tries)


def _weights_read_by_a_pass(model: nn.Module) -> Iterator[torch.Tensor]:
    """Each tensor the model holds once (tied weights are one), 4-bit codes and scales
    included; not the input embeddings, of which a pass reads one row, unless the vocabulary
    projection multiplies the same matrix."""
    embedding = input_embedding(model)
    projected = getattr(vocabulary_projection(model), "weight", None)
    seen: set[int] = set()
    if embedding is not None and embedding.weight is not projected:
        seen.add(embedding.weight.data_ptr())
    for tensor in _held_tensors(model):
        if tensor.device.type != "cpu" or (address := tensor.data_ptr()) in seen:
            continue
        seen.add(address)
        yield tensor


def _held_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    yield from model.parameters()
    yield from model.buffers()
    for module in model.modules():
        if isinstance(module, Int4Linear):
            # A layer sharing a product holds no weight of its own: the product holds them all.
            shared = module.shared_product
            weight = shared.weight if shared is not None else module.weight_int4
            yield weight.packed
            yield weight.scales_and_zeros


def _as_wide_words(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as int64 where they allow it: torch sums int64 (and fp32) at memory
    speed, but uint8 codes at ~0.5 GB/s and int32 at ~2 GB/s on the machine above."""
    flat = tensor.detach().reshape(-1)
    if (flat.numel() * flat.element_size()) % 8 or flat.data_ptr() % 8:
        return flat
    return flat.view(torch.uint8).view(torch.int64)
