"""Whether a model's weights fit in the memory left, asked before they are loaded.

Phi-3-mini in fp32 (the default) takes ~15 GB: on a 16 GB laptop loading it would end with
the out-of-memory killer, and the editor restarting the server into the same end. A model
that does not fit is loaded without weights instead (hover and the architecture still work),
with a message that says what it needs, what is free and what would fit.
"""

from __future__ import annotations

from torch import nn

from phi3_lsp.architecture import count_parameters
from phi3_lsp.quantize import int4_bytes
from phi3_lsp.settings import WeightFormat

RUNTIME_BYTES = 512 << 20
"""What the server holds besides the weights: ~350 MB once torch, transformers and pygls are
imported (measured), plus a pass's activations and the load's own buffers."""


def weights_bytes(model: nn.Module, weights: WeightFormat) -> int:
    """Bytes the weights of `model` take in memory as `weights`; `model` may be on the meta
    device (only shapes count)."""
    return int4_bytes(model) if weights == "int4" else 4 * count_parameters(model)


def memory_shortfall(
    name: str, model: nn.Module, weights: WeightFormat, available: int | None
) -> str | None:
    """Why `model` in `weights` cannot be loaded in `available` bytes, with what would fit;
    None when it fits or nothing is known of the memory."""
    needed = RUNTIME_BYTES + weights_bytes(model, weights)
    if available is None or needed <= available:
        return None
    fixes = []
    if weights == "fp32":
        int4_needed = RUNTIME_BYTES + weights_bytes(model, "int4")
        if int4_needed <= available:
            fixes.append(f'set phi3.weights to "int4" (it needs about {_gb(int4_needed)})')
    fixes += ["free memory and restart the server", "set phi3.model to a smaller model"]
    return (
        f"{name} in {weights} needs about {_gb(needed)} of memory and {_gb(available)} is "
        "free, so it was loaded without weights: hover and the architecture work, completions "
        f"need the weights. To complete, {', '.join(fixes[:-1])}, or {fixes[-1]}."
    )


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"
