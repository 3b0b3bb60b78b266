"""4-bit layers made from a checkpoint's files one weight at a time.

Loading a model to quantize it holds all of its weights at once: Phi-3-mini-sized, 10.7 GB of
anonymous memory at the peak (16.5 GB resident with the mapped files), more than a 16 GB
machine has left beside an fp32 server. Reading each weight from the safetensors files as it is
quantized holds the 4-bit form and one weight. The tensors are the ones `quantize_to_int4` makes
from the loaded model, to the bit: each is quantized by the same code from the same values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from phi3_lsp.fp32_products import stored_in_bf16
from phi3_lsp.int4_weights import Int4Weight
from phi3_lsp.memory_release import release_freed_memory
from phi3_lsp.quantize import can_quantize, input_embedding, vocabulary_projection
from phi3_lsp.screened_projection import ScreenedProjection

log = logging.getLogger(__name__)


def int4_tensors_from_files(model: nn.Module, weights_dir: Path) -> dict[str, torch.Tensor] | None:
    """What `int4_tensors` gives for `model` loaded from `weights_dir` and quantized, made from
    the files; `model` only lends its module names and shapes (the meta device will do).

    None where the files do not hold the loaded values as they are: a checkpoint not all in
    bf16, or one its config loads in another dtype than bf16 or fp32 (bf16 widens to fp32
    exactly; other casts round), or a weight missing under its module's name or of another
    shape (one that transformers renames or converts as it loads). The caller then loads the
    model and quantizes that.
    """
    if not stored_in_bf16(weights_dir) or _loaded_dtype(weights_dir) not in _EXACT_LOADS:
        return None
    with ExitStack() as files:
        tensors = _Checkpoint(
            [
                files.enter_context(safe_open(str(path), framework="pt"))
                for path in sorted(weights_dir.glob("*.safetensors"))
            ]
        )
        plan = list(_weights_to_quantize(model, tensors))
        unfit = [name for name, key, _ in plan if key is None]
        if unfit:
            log.info(
                "Quantizing the loaded model: the files hold no fitting weight of %s", unfit[0]
            )
            return None
        stored: dict[str, torch.Tensor] = {}
        for name, key, screened in plan:
            assert key is not None
            weight = tensors.get(key)
            if screened:
                stored.update(_screen_tensors(name, weight))
            else:
                stored.update(Int4Weight.quantize(weight).tensors(name))
            del weight
            # One weight at a time: where freed memory is kept for reuse (see `memory_release`),
            # the blocks of one weight fit the next one's badly and the heaps grew to 9.3 GB.
            release_freed_memory()
        return stored


_EXACT_LOADS = (None, "bfloat16", "float32")
"""The dtypes a load of a bf16 checkpoint may be in (None: the checkpoint's own) and keep its
values: `from_pretrained(dtype="auto")` takes the config's."""


def _loaded_dtype(weights_dir: Path) -> object:
    try:
        config = json.loads((weights_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    if not isinstance(config, dict):
        return "unknown"
    return config.get("dtype", config.get("torch_dtype"))


class _Checkpoint:
    """The tensors of a checkpoint's open safetensors files, by name."""

    def __init__(self, files: list[Any]) -> None:
        # (A safetensors file is not iterable: its names come from `keys()`.)
        self._file_of = {key: file for file in files for key in file.keys()}  # noqa: SIM118

    def shape(self, key: str) -> tuple[int, ...] | None:
        file = self._file_of.get(key)
        return None if file is None else tuple(file.get_slice(key).get_shape())

    def get(self, key: str) -> torch.Tensor:
        tensor: torch.Tensor = self._file_of[key].get_tensor(key)
        return tensor


def _weights_to_quantize(
    model: nn.Module, checkpoint: _Checkpoint
) -> Iterator[tuple[str, str | None, bool]]:
    """(module name, checkpoint key or None where it has none that fits, screened) for each
    layer `quantize_to_int4` turns to 4 bits, in its order."""
    output = vocabulary_projection(model)
    names = {module: name for name, module in model.named_modules()}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module is not output and can_quantize(module):
            yield name, _key(checkpoint, f"{name}.weight", module), False
    if isinstance(output, nn.Linear) and can_quantize(output):
        key = _key(checkpoint, f"{names[output]}.weight", output)
        embedding = input_embedding(model)
        if key is None and embedding is not None and embedding.weight is output.weight:
            key = _key(checkpoint, f"{names[embedding]}.weight", output)  # tied: stored once
        yield names[output], key, True


def _key(checkpoint: _Checkpoint, key: str, linear: nn.Linear) -> str | None:
    fits = checkpoint.shape(key) == (linear.out_features, linear.in_features)
    return key if fits else None


def _screen_tensors(name: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=False)
    return ScreenedProjection(linear).screen_tensors(name)
