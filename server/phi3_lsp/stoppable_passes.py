"""Ending a forward pass between two decoder layers once its request is stopped.

A pass over a long prompt takes seconds (512 tokens on 2 cores: SmolLM2 ~1.5 s, Phi-3-mini in
int4 ~40 s), and a request the user has moved away from should not hold the model thread that
long. A hook before each decoder layer raises `PassStopped` once the stop event is set, so a
stop costs at most one layer of the pass in flight. The layers that finished have written keys
and values the caller must drop (`kv_cache.truncate`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn


class PassStopped(Exception):
    """The stop event was set before or while a forward pass ran; the pass did not finish."""


class LayerStops:
    """Checks a stop event before every decoder layer of one model."""

    def __init__(self, model: nn.Module) -> None:
        self._event: threading.Event | None = None
        # A model whose layer list is not found is stopped between passes only (`check`).
        for layer in decoder_layers(model):
            layer.register_forward_pre_hook(self._before_layer)

    @contextmanager
    def watching(self, event: threading.Event | None) -> Iterator[None]:
        """Passes run in the block raise `PassStopped` once `event` is set."""
        self._event = event
        try:
            yield
        finally:
            self._event = None

    def check(self) -> None:
        """Raise `PassStopped` if the watched event is set."""
        if self._event is not None and self._event.is_set():
            raise PassStopped

    def _before_layer(self, module: nn.Module, args: Any) -> None:
        self.check()


def decoder_layers(model: nn.Module) -> Sequence[nn.Module]:
    """The model's decoder layers: the list holding `config.num_hidden_layers` modules."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return list(module)
    return []
