"""Ending a forward pass between two decoder layers once its request is stopped.

A pass over a long prompt takes seconds (512 tokens on 2 cores: SmolLM2 ~1.5 s, Phi-3-mini in
int4 ~40 s), and a request the user has moved away from should not hold the model thread that
long. A hook before each decoder layer raises `PassStopped` once the stop event is set, so a
stop costs at most one layer of the pass in flight. The layers that finished have written keys
and values the caller must drop (`kv_cache.truncate`).

A `StopRequest` may spare a prompt pass in flight (see `prompt_pass`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn

from phi3_lsp.stop_requests import StopRequest


class PassStopped(Exception):
    """The stop event was set before or while a forward pass ran; the pass did not finish."""


class LayerStops:
    """Checks a stop event before every decoder layer of one model."""

    def __init__(self, model: nn.Module) -> None:
        self._event: threading.Event | None = None
        self._prompt_pass: Sequence[int] = ()
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

    @contextmanager
    def prompt_pass(self, tokens: Sequence[int]) -> Iterator[None]:
        """The pass run in the block leaves `tokens` (a prompt prefix) in the cache: a
        `StopRequest` that spares them lets it finish."""
        self._prompt_pass = tokens
        try:
            yield
        finally:
            self._prompt_pass = ()

    def check(self) -> None:
        """Raise `PassStopped` if the watched event is set (call between passes)."""
        if self._event is not None and self._event.is_set():
            raise PassStopped

    def _before_layer(self, module: nn.Module, args: Any) -> None:
        event = self._event
        if event is None or not event.is_set():
            return
        if self._prompt_pass and isinstance(event, StopRequest) and event.spares(self._prompt_pass):
            return
        raise PassStopped


def decoder_layers(model: nn.Module) -> Sequence[nn.Module]:
    """The model's decoder layers: the list holding `config.num_hidden_layers` modules."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return list(module)
    return []
