"""How far the passes over a prompt have got, counted in decoder layers.

Reading a long prompt is the slow part of a first suggestion in a file: ~1,500 tokens take
~3.5 s with SmolLM2 and ~100 s with Phi-3-mini on 2 cores. A hook after each decoder layer of a
prompt pass reports the tokens read so far, a layer's share of the pass at a time, so that a
client can show the reading advance instead of an unexplained wait.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from phi3_lsp.stoppable_passes import decoder_layers

PromptReadCallback = Callable[[int, int], None]
"""Called with the prompt tokens read so far and the tokens to read in all (those after the
reused prefix); called from the model thread after each decoder layer of a prompt pass."""


class PromptProgress:
    """Reports the tokens of prompt passes read, after every decoder layer of one model."""

    def __init__(self, model: nn.Module) -> None:
        layers = decoder_layers(model)
        self._layer_count = len(layers)
        self._report: Callable[[int], None] | None = None
        self._pass_tokens = 0
        self._layers_done = 0
        # A model whose layer list is not found reports nothing.
        for layer in layers:
            layer.register_forward_hook(self._after_layer)

    @contextmanager
    def pass_over(
        self, on_read: PromptReadCallback | None, read_before: int, tokens: int, total: int
    ) -> Iterator[None]:
        """A pass over `tokens` more prompt tokens, after `read_before` of `total`, runs in the
        block: `on_read` hears how many are read after each layer."""
        if on_read is None:
            yield
            return
        self._pass_tokens, self._layers_done = tokens, 0
        self._report = lambda read: on_read(read_before + read, total)
        try:
            yield
        finally:
            self._report = None

    def _after_layer(self, module: nn.Module, args: Any, output: Any) -> None:
        report = self._report
        if report is None:
            return
        self._layers_done += 1
        report(self._pass_tokens * self._layers_done // self._layer_count)
