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
        # A model whose layer list is not found reports nothing.
        self._layers = decoder_layers(model)

    @contextmanager
    def pass_over(
        self, on_read: PromptReadCallback | None, read_before: int, tokens: int, total: int
    ) -> Iterator[None]:
        """A pass over `tokens` more prompt tokens, after `read_before` of `total`, runs in the
        block: `on_read` hears how many are read after each layer."""
        if on_read is None or not self._layers:
            yield
            return
        layers_done = 0

        def after_layer(module: nn.Module, args: Any, output: Any) -> None:
            nonlocal layers_done
            layers_done += 1
            on_read(read_before + tokens * layers_done // len(self._layers), total)

        # Hooked for this pass only: decode passes, many per answer, pay nothing.
        handles = [layer.register_forward_hook(after_layer) for layer in self._layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
