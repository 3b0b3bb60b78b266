"""Attention that gives each position the bits a one-token pass would give it.

A pass that checks drafted tokens (see `drafts`) must pick at every position exactly the token
a one-token pass would: the greedy text may not depend on whether drafts were tried. With int4
weights every linear layer computes each position on its own (the packed kernel gives the same
bits for a row whatever rows come with it), but attention over several positions at once, with
a causal mask, rounds differently in the last bits, and the bf16 inputs of the next 4-bit layer
can turn that into a different token where two are nearly tied. Our attention kernel computes
each position of a causal pass, of any length, exactly as it computes a one-token pass; where it
cannot run, a short pass after cached tokens runs SDPA once per position, over the keys up to
it, with no mask.
"""

from __future__ import annotations

import weakref
from functools import cache
from typing import Any

import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from phi3_lsp.cpu_kernels import can_attend, own_kernels

ROW_BY_ROW_ATTENTION = "sdpa_row_by_row"
"""The name `attend_row_by_row` registers with transformers and gives the model."""
MAX_ROWS = 16
"""Without our kernel, longer passes are prompts, whose logits are not compared with one-token
passes."""


def attention_row_by_row(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, each position attended as a one-token pass attends it:
    a causal pass by our kernel where it runs; else a pass of 2 to MAX_ROWS positions after
    cached keys runs once per position, each seeing the keys up to its own, unless the keys
    outrun a sliding window (see `exact_rows_until`)."""
    rows, keys = query.shape[2], key.shape[2]
    masked_by_window = outruns_window(kwargs.get("sliding_window"), keys)
    causal_model = kwargs.get("is_causal", getattr(module, "is_causal", True))
    if not masked_by_window and _CAUSAL_MASKS.is_causal(attention_mask, rows, keys, causal_model):
        if rows == 1:
            return attend_one_position(module, query, key, value, **kwargs), None
        attended = _attend_causal(query, key, value, **kwargs)
        if attended is not None:
            return attended, None
    if rows == 1 or rows > MAX_ROWS or keys <= rows or masked_by_window:
        output: torch.Tensor = sdpa_attention_forward(
            module, query, key, value, attention_mask, **kwargs
        )[0]
        return output, None
    outputs = []
    for row in range(rows):
        visible = keys - rows + row + 1
        row_output = attend_one_position(
            module,
            query[:, :, row : row + 1],
            key[:, :, :visible],
            value[:, :, :visible],
            **kwargs,
        )
        outputs.append(row_output)
    return torch.cat(outputs, dim=1), None  # outputs are [batch, positions, heads, head_dim]


def attend_one_position(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs: Any
) -> torch.Tensor:
    """One position's attention over every key given, [batch, 1, heads, head_dim]: our kernel
    where it runs (a decode pass reads the keys and values ~2x as fast as SDPA), else SDPA.
    Either way a position's output depends on its query and the keys it sees alone."""
    kernels = own_kernels()
    if kernels is not None and _plain(kwargs) and query.shape[0] == 1:
        heads, keys, values = query[0, :, 0], key[0], value[0]
        if can_attend(heads, keys, values):
            return kernels.attend_one_position(heads, keys, values, _scale(query, kwargs))[
                None, None
            ]
    output: torch.Tensor = sdpa_attention_forward(module, query, key, value, None, **kwargs)[0]
    return output


def _attend_causal(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs: Any
) -> torch.Tensor | None:
    """A causal pass's attention, [batch, positions, heads, head_dim], by our kernel (a
    prompt's in 0.4x SDPA's time); None where it cannot run."""
    kernels = own_kernels()
    if kernels is None or not _plain(kwargs) or query.shape[0] != 1:
        return None
    queries, keys, values = query[0], key[0], value[0]
    if not can_attend(queries, keys, values):
        return None
    return kernels.attend_causal(queries, keys, values, _scale(query, kwargs))[None]


def _plain(kwargs: dict[str, Any]) -> bool:
    """Whether the attention asked for is plain softmax attention, what our kernels compute."""
    return not kwargs.get("dropout") and kwargs.get("softcap") is None and "s_aux" not in kwargs


def _scale(query: torch.Tensor, kwargs: dict[str, Any]) -> float:
    scale: float = kwargs.get("scaling") or query.shape[-1] ** -0.5
    return scale


class _CausalMasks:
    """Recognizes masks that let each of a pass's positions see exactly the keys up to its own
    (a prompt without padding gets them). A model hands every layer the same mask: it is
    compared once (~1 ms for 512 rows over 2,048 keys), then known by its identity."""

    def __init__(self) -> None:
        self._last_causal: weakref.ref[torch.Tensor] | None = None

    def is_causal(
        self, mask: torch.Tensor | None, rows: int, keys: int, causal_model: bool
    ) -> bool:
        if mask is None:
            # transformers passes no mask where SDPA's own causal mask does, in a causal
            # model: one row, or as many rows as keys
            return rows == 1 or (causal_model and rows == keys)
        if rows == 1:
            return bool(mask.all())
        if mask.dtype != torch.bool or mask.shape != (1, 1, rows, keys):
            return False
        if self._last_causal is not None and self._last_causal() is mask:
            return True
        causal = torch.ones(rows, keys, dtype=torch.bool).tril(keys - rows)
        if not torch.equal(mask[0, 0], causal):
            return False
        self._last_causal = weakref.ref(mask)
        return True


_CAUSAL_MASKS = _CausalMasks()


def outruns_window(window: int | None, keys: int) -> bool:
    """Whether a sliding window of `window` tokens hides some of `keys` from a position."""
    return window is not None and 0 < window < keys


def is_causal_pass(mask: torch.Tensor | None, rows: int, keys: int, window: int | None) -> bool:
    """Whether `mask` (a causal model's, as transformers gives its layers) and the sliding
    `window` let each of a pass's `rows` positions see exactly the `keys` up to its own."""
    return not outruns_window(window, keys) and _CAUSAL_MASKS.is_causal(
        mask, rows, keys, causal_model=True
    )


def attend_row_by_row(model: nn.Module) -> bool:
    """Switch a model that uses SDPA attention to `attention_row_by_row`; False for others."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    _register()
    model.set_attn_implementation(ROW_BY_ROW_ATTENTION)  # type: ignore[operator]
    return True


def exact_rows_until(config: Any, context_length: int) -> int:
    """Tokens in context up to which a row-by-row pass equals one-token passes: beyond a
    sliding window, one-token passes are masked and row-by-row ones are not split."""
    window = getattr(config, "sliding_window", None)
    return min(window, context_length) if isinstance(window, int) and window > 0 else context_length


@cache
def _register() -> None:
    # Imported here, not with this module: they take ~1 s, which would delay the engine's
    # import and so the first hovers; a loaded model has imported them already.
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ROW_BY_ROW_ATTENTION, attention_row_by_row)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ROW_BY_ROW_ATTENTION, sdpa_mask)
