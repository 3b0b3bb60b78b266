"""The vocabulary projection for greedy decoding: read in 4 bits, exact where it matters.

Greedy decoding only needs the most likely token. Its fp32 projection reads the whole
vocabulary matrix for every token (Phi-3-mini: 394 MB, SmolLM2: 113 MB), yet read in 4 bits
alone it changes the greedy text. `ScreenedProjection` does both: a 4-bit pass scores every
token, then the exact rows are read only for the tokens whose score is within reach of the
best. What 4 bits lose in row i is err_i · x, which scales with |err_i| (the row's error norm,
known from quantizing) times a factor set by the input x. That factor is measured on a fixed
sample of rows for each input, and a token is ruled out only if it stays below the exact score
of the 4-bit favourite by MARGIN times its error. When the screen cannot rule out enough
tokens for an input, all of that input's scores are computed in fp32. The exact weight may be
bf16, as a checkpoint has it: its rows widen to fp32 exactly, so it scores as its fp32 copy
would, in half the memory.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional

from phi3_lsp.int4_weights import Int4Weight, quantize_with_row_errors

MARGIN = 16.0
"""How many times the input's measured 4-bit error a ruled-out token must stay below the best.

On SmolLM2 over 1,583 positions of real code, the largest error among all 49,152 rows was
7.0 times the one measured on the sample rows of the same input.
"""
SAMPLE_ROWS = 32
"""Rows computed exactly for every input, to measure its 4-bit error."""
MAX_SCREENED_ROWS = 16
"""Inputs of more rows (a prompt) get every output exact: few positions need their logits."""
_BF16_ROUNDING = 2.0**-7  # relative rounding of the kernel's bf16 output, with room to spare


class ScreenedProjection(nn.Module):
    """A linear layer [in -> vocabulary] whose largest outputs are exact fp32 values (of its
    weight widened to fp32, if it is bf16).

    For each input row (up to MAX_SCREENED_ROWS: a decode step, or one checking drafted
    tokens), outputs ruled out from being the largest are 4-bit approximations, so the argmax
    is the fp32 layer's unless some 4-bit error exceeds MARGIN times the measured one. For
    more rows (a prompt), every output is exact.
    """

    def __init__(
        self, linear: nn.Linear, screen: tuple[Int4Weight, torch.Tensor] | None = None
    ) -> None:
        """Screen `linear`; `screen` is its 4-bit weight and row error norms if already made."""
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        # The same Parameters: tied input embeddings stay tied, the parameter count unchanged.
        self.weight = linear.weight
        self.bias = linear.bias
        # Plain tensors, neither parameters nor buffers (as in `Int4Linear`).
        self.screen, row_errors = screen or quantize_with_row_errors(linear.weight)
        self.row_errors = row_errors.clamp_(min=torch.finfo(torch.float32).tiny)
        spacing = max(1, self.out_features // SAMPLE_ROWS)
        self._sample_rows = torch.arange(0, self.out_features, spacing)
        self._sample_errors = self.row_errors[self._sample_rows]
        self.max_exact_rows = max(SAMPLE_ROWS, self.out_features // 16)
        """Beyond this many candidates, computing every row costs about as much."""

    @staticmethod
    def stored_screen(
        tensors: Mapping[str, torch.Tensor], prefix: str, linear: nn.Linear
    ) -> tuple[Int4Weight, torch.Tensor]:
        """The screen `screen_tensors` stored under `prefix`, checked against `linear`."""
        screen = Int4Weight.from_tensors(
            tensors, f"{prefix}.screen", (linear.out_features, linear.in_features)
        )
        row_errors = tensors[f"{prefix}.row_errors"]
        if tuple(row_errors.shape) != (linear.out_features,):
            raise ValueError(f"the stored row errors of {prefix} do not fit its layer")
        return screen, row_errors

    def screen_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors of the screen (the fp32 weight is the model's own), for `stored_screen`."""
        return {**self.screen.tensors(f"{prefix}.screen"), f"{prefix}.row_errors": self.row_errors}

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs.reshape(-1, self.in_features)
        if rows.shape[0] > MAX_SCREENED_ROWS:
            return functional.linear(inputs, self._fp32_weight(), self.bias)
        logits = self._screened_logits(rows.float())
        return logits.to(inputs.dtype).reshape(*inputs.shape[:-1], self.out_features)

    def _screened_logits(self, rows: torch.Tensor) -> torch.Tensor:
        """4-bit logits [rows, vocabulary] with exact values for every token that could be the
        largest of its row; a row where too many could be gets every value exact.

        Each row's scores are those a pass over that row alone gives (see `row_attention`): the
        4-bit kernel and `_exact` compute a row on its own, and each row gets its own candidates
        and, if they are too many, its own one-row product.
        """
        logits = self.screen.multiply_inputs(rows).float()
        if self.bias is not None:
            logits += self.bias
        # The 4-bit error for each input, per unit of row error norm, measured on a fixed spread
        # of rows (the error depends on the input, not on which tokens score high), and the
        # exact score of each row's 4-bit favourite: the bar every other token must reach.
        sample_exact = self._exact(self._sample_rows, rows)
        unit_error = (sample_exact - logits[:, self._sample_rows]) / self._sample_errors
        unit_error = unit_error.square().mean(dim=1, keepdim=True).sqrt_()
        favourites = logits.argmax(dim=1)
        bars = self._exact(favourites, rows).diagonal().unsqueeze(1)  # row i's own favourite
        reach = logits + MARGIN * unit_error * self.row_errors + _BF16_ROUNDING * logits.abs()
        for index, row in enumerate(rows):
            candidates = torch.nonzero(reach[index] >= bars[index]).squeeze(1)
            alone = row.unsqueeze(0)
            if candidates.numel() > self.max_exact_rows:
                logits[index] = functional.linear(alone, self._fp32_weight(), self.bias)[0]
            else:
                logits[index, candidates] = self._exact(candidates, alone)[0]
        return logits

    def _exact(self, token_ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Exact scores [rows, tokens] of `token_ids` for every input row.

        A token must score the same whatever rows and other tokens come with it (see
        `row_attention`). Matrix products do not guarantee that: measured, a token's score
        from a matrix-vector product changes with the number of tokens in the matrix. A
        product per element summed along each weight row does.
        """
        weight = self.weight.index_select(0, token_ids).float()
        exact = torch.stack([(weight * row).sum(dim=1) for row in rows])
        return exact if self.bias is None else exact + self.bias[token_ids]

    def _fp32_weight(self) -> torch.Tensor:
        """The whole weight in fp32: itself, or a copy for this product only. Few passes need
        it (SmolLM2: one screened row in 266), so a bf16 weight is not kept twice for them."""
        return self.weight.float()

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, screened in 4 bits"
        )
