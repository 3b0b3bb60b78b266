"""Attention one query position at a time, for short passes over cached tokens.

A pass that checks drafted tokens (see `drafts`) must pick at every position exactly the token
a one-token pass would: the greedy text may not depend on whether drafts were tried. With int4
weights every linear layer computes each position on its own (the packed kernel gives the same
bits for a row whatever rows come with it), but attention over several positions at once, with
a causal mask, rounds differently in the last bits, and the bf16 inputs of the next 4-bit layer
can turn that into a different token where two are nearly tied. So a short pass after cached
tokens computes each position's attention exactly as a one-token pass computes it: over the
keys up to that position, with no mask.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ROW_BY_ROW_ATTENTION = "sdpa_row_by_row"
"""The name `attend_row_by_row` registers with transformers and gives the model."""
MAX_ROWS = 16
"""Longer passes are prompts, whose logits are not compared with one-token passes."""


def attention_row_by_row(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention; a pass of 2 to MAX_ROWS positions after cached keys runs
    it once per position, each seeing the keys up to its own (the mask is then causal only),
    unless the keys outrun a sliding window (see `exact_rows_until`)."""
    rows, keys = query.shape[2], key.shape[2]
    window = kwargs.get("sliding_window")
    if rows == 1 or rows > MAX_ROWS or keys <= rows or (window and keys > window):
        output: torch.Tensor = sdpa_attention_forward(
            module, query, key, value, attention_mask, **kwargs
        )[0]
        return output, None
    outputs = []
    for row in range(rows):
        visible = keys - rows + row + 1
        row_output, _ = sdpa_attention_forward(
            module,
            query[:, :, row : row + 1],
            key[:, :, :visible],
            value[:, :, :visible],
            None,
            **kwargs,
        )
        outputs.append(row_output)
    return torch.cat(outputs, dim=1), None  # outputs are [batch, positions, heads, head_dim]


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
