"""Whether a model's weights fit in the memory left, asked before they are loaded.

Phi-3-mini in fp32 (the default) takes 7.6 GB from its bf16 checkpoint where our fp32 kernel
runs (see `fp32_products`), ~15 GB elsewhere: on a laptop with too little free, loading it would
end with the out-of-memory killer, and the editor restarting the server into the same end. A model
that does not fit is loaded without weights instead (hover and the architecture still work),
with a message that says what it needs, what is free and what would fit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from phi3_lsp.architecture import count_parameters
from phi3_lsp.fp32_products import bytes_held_from_bf16
from phi3_lsp.other_servers import OtherProcess
from phi3_lsp.quantize import int4_bytes
from phi3_lsp.settings import Settings, WeightFormat
from phi3_lsp.system_memory import available_memory

RUNTIME_BYTES = 512 << 20
"""What the server holds besides the weights: ~350 MB once torch, transformers and pygls are
imported (measured), plus a pass's activations and the load's own buffers."""
PASS_BYTES = 256 << 20
"""The temporaries of a pass over a prompt chunk, beyond its keys and values."""
PROMPT_TOKENS = Settings.context_tokens + Settings.max_new_tokens
"""A prompt at the default budget and its continuation: what one completion holds as keys and
values (Phi-3-mini in fp32: ~0.8 GB)."""


def weights_bytes(model: nn.Module, weights: WeightFormat, *, bf16_held: bool = False) -> int:
    """Bytes the weights of `model` take in memory as `weights`; `model` may be on the meta
    device (only shapes count). `bf16_held`: fp32 keeps a bf16 checkpoint's weights that widen
    as they are read in bf16 (see `fp32_products`)."""
    if weights == "int4":
        return int4_bytes(model)
    return bytes_held_from_bf16(model) if bf16_held else 4 * count_parameters(model)


def memory_shortfall(
    name: str,
    model: nn.Module,
    weights: WeightFormat,
    available: int | None,
    *,
    bf16_held: bool = False,
    find_others: Callable[[], Sequence[OtherProcess]] = list,
) -> str | None:
    """Why `model` in `weights` cannot be loaded in `available` bytes, with what would fit;
    None when it fits or nothing is known of the memory. `bf16_held`: see `weights_bytes`.
    `find_others`: lists the other phi3-lsp processes (asked only when the model does not fit),
    named when stopping them would make room."""
    beside_weights = RUNTIME_BYTES + prompt_bytes(model.config)
    needed = beside_weights + weights_bytes(model, weights, bf16_held=bf16_held)
    if available is None or needed <= available:
        return None
    others = find_others()
    held_by_others = sum(other.private_bytes for other in others)
    others_named = bool(others) and needed <= available + held_by_others
    fixes = []
    if others_named:
        fixes.append(f"stop {'it' if len(others) == 1 else 'them'} and restart this server")
    if weights == "fp32":
        int4_needed = beside_weights + weights_bytes(model, "int4")
        if int4_needed <= available:
            fixes.append(f'set phi3.weights to "int4" (it needs about {_gb(int4_needed)})')
    if not others_named:
        fixes.append("free memory and restart the server")
    fixes.append("set phi3.model to a smaller model")
    return (
        f"{name} in {weights} needs about {_gb(needed)} of memory and {_gb(available)} is "
        "free, so it was loaded without weights: hover and the architecture work, completions "
        "need the weights. "
        + (_holders(others, held_by_others) if others_named else "")
        + f"To complete, {', '.join(fixes[:-1])}, or {fixes[-1]}."
    )


def _holders(others: Sequence[OtherProcess], held: int) -> str:
    """Who holds the memory: most often the server of another editor window."""
    if len(others) == 1:
        return (
            f"Another phi3-lsp process holds {_gb(held)} (process {others[0].pid}, perhaps "
            "another editor window's server). "
        )
    pids = ", ".join(str(other.pid) for other in others)
    return (
        f"{len(others)} other phi3-lsp processes hold {_gb(held)} (processes {pids}, perhaps "
        "other editor windows' servers). "
    )


def kv_bytes_per_token(config: Any) -> int:
    """Bytes of keys and values that one token adds to the cache: fp32, as both weight formats
    compute in fp32 (an int4 model's input embedding may be bf16, its keys and values are not)."""
    text = config.get_text_config()
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return 2 * int(text.num_hidden_layers) * kv_heads * head_dim * 4


def prompt_bytes(config: Any) -> int:
    """The keys and values of one completion at the default prompt budget."""
    return PROMPT_TOKENS * kv_bytes_per_token(config)


def room_for_a_completion(kv_bytes_per_token: int, tokens: int) -> int:
    """What reading another prompt needs beside what is held: the keys and values of `tokens`
    (at least the default budget's) and a pass's temporaries."""
    return PASS_BYTES + kv_bytes_per_token * max(PROMPT_TOKENS, tokens)


def drafter_fits(model: nn.Module, checkpoint_bytes: int = 0) -> bool:
    """Whether the int4 form of `model` (on any device: only shapes count) fits in the memory
    left beside what is loaded, with room for a completion (True when nothing is known).
    `checkpoint_bytes`: the checkpoint is read first, to quantize it."""
    needed = weights_bytes(model, "int4") + PASS_BYTES + prompt_bytes(model.config)
    return not memory_is_short(needed + checkpoint_bytes)


def quantizing_fits(model: nn.Module, checkpoint_bytes: int, from_files: bool = False) -> bool:
    """Whether another process can make the int4 form of `model` from its checkpoint of
    `checkpoint_bytes` beside what is loaded (True when nothing is known). It holds the int4
    form and its own imports, and either the loaded checkpoint (Phi-3-mini-sized: 10.7 GB at
    the peak) or, `from_files` one weight at a time (see `checkpoint_int4`), the temporaries of
    its largest weight (3.3-3.7 GB at the peak)."""
    held = _largest_weight_temporaries(model) if from_files else checkpoint_bytes
    needed = held + weights_bytes(model, "int4") + RUNTIME_BYTES + PASS_BYTES
    return not memory_is_short(needed)


def _largest_weight_temporaries(model: nn.Module) -> int:
    """Quantizing a weight holds it in fp32 about four times over: a copy, its codes and, for
    the vocabulary projection, its dequantized form and the checkpoint's own tensor."""
    largest = max((p.numel() for p in model.parameters() if p.dim() == 2), default=0)
    return 4 * 4 * largest


def checkpoint_bytes(weights_dir: Path) -> int:
    """The size of the checkpoint's tensors as stored (safetensors files)."""
    return sum(file.stat().st_size for file in weights_dir.glob("*.safetensors"))


def memory_is_short(needed: int) -> bool:
    """True when less than `needed` bytes are left for this process (False when unknown)."""
    available = available_memory()
    return available is not None and available < needed


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"
