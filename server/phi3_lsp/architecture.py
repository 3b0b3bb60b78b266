"""What a model is made of: its module tree, key hyper-parameters and parameter counts.

Works on the meta device as well as on real weights: nothing here reads a tensor's values.
The JSON shape is the `phi3.showArchitecture` result in docs/protocol.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from phi3_lsp.cpu_kernels import held_blocks, in_features
from phi3_lsp.int4_weights import GROUP_SIZE
from phi3_lsp.quantize import Int4Linear, input_embedding, vocabulary_projection


@dataclass(frozen=True)
class ConfigSummary:
    """The hyper-parameters that decide a decoder's size and speed."""

    model_type: str
    layers: int
    hidden_size: int
    intermediate_size: int | None
    attention_heads: int
    key_value_heads: int
    head_dim: int
    vocab_size: int
    context_length: int | None
    dtype: str
    tie_word_embeddings: bool

    def to_json(self) -> dict[str, Any]:
        """The `config` object of the architecture report."""
        return {
            "modelType": self.model_type,
            "layers": self.layers,
            "hiddenSize": self.hidden_size,
            "intermediateSize": self.intermediate_size,
            "attentionHeads": self.attention_heads,
            "keyValueHeads": self.key_value_heads,
            "headDim": self.head_dim,
            "vocabSize": self.vocab_size,
            "contextLength": self.context_length,
            "dtype": self.dtype,
            "tieWordEmbeddings": self.tie_word_embeddings,
        }


@dataclass(frozen=True)
class ModuleCount:
    """Parameters held by one named module (its children included).

    `shared_with` names an earlier module that holds the same parameters (a tied `lm_head` and
    `model.embed_tokens`): the rows then add up to more than the total, which counts them once.
    """

    name: str
    type: str
    count: int
    shared_with: str | None = None


@dataclass(frozen=True)
class ArchitectureReport:
    """A model's architecture as shown to a user: `print(model)`, config and parameter counts."""

    model: str
    class_name: str
    weights_loaded: bool
    repr: str
    config: ConfigSummary
    total_parameters: int
    by_module: tuple[ModuleCount, ...]
    weights_pending: bool = False
    """Built from the config before the weights have come (see
    `engine.architecture_before_weights`): the loaded model's report will differ in
    `weights_loaded`."""

    def to_json(self) -> dict[str, Any]:
        """The report in the JSON shape of docs/protocol.md."""
        return {
            "model": self.model,
            "className": self.class_name,
            "weightsLoaded": self.weights_loaded,
            "weightsPending": self.weights_pending,
            "repr": self.repr,
            "config": self.config.to_json(),
            "parameters": {
                "total": self.total_parameters,
                "byModule": [
                    {
                        "name": entry.name,
                        "type": entry.type,
                        "count": entry.count,
                        "sharedWith": entry.shared_with,
                    }
                    for entry in self.by_module
                ],
            },
        }


def describe_model(
    model: nn.Module,
    config: Any,
    *,
    name: str,
    weights_loaded: bool,
    weights_pending: bool = False,
) -> ArchitectureReport:
    """Build the report for `model` (any device, meta included) and its transformers config."""
    return ArchitectureReport(
        model=name,
        class_name=type(model).__name__,
        weights_loaded=weights_loaded,
        repr=repr(model),
        config=summarize_config(config, model),
        total_parameters=count_parameters(model),
        by_module=tuple(module_counts(model)),
        weights_pending=weights_pending,
    )


def summarize_config(config: Any, model: nn.Module) -> ConfigSummary:
    """The key hyper-parameters of a transformers config (the text part of multimodal ones)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(text.num_attention_heads)
    hidden = int(text.hidden_size)
    # Some configs leave head_dim out (or None): it is then hidden_size / heads.
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    return ConfigSummary(
        model_type=str(text.model_type),
        layers=int(text.num_hidden_layers),
        hidden_size=hidden,
        intermediate_size=_optional_int(getattr(text, "intermediate_size", None)),
        attention_heads=heads,
        key_value_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(head_dim),
        vocab_size=int(text.vocab_size),
        context_length=_optional_int(getattr(text, "max_position_embeddings", None)),
        dtype=_parameter_dtype(model),
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
    )


def count_parameters(module: nn.Module) -> int:
    """All parameters of `module`; one shared by several modules (tied weights) counts once.

    The weights of int4 layers, and fp32 weights held as Q4_1 or Q8_0 blocks, count as the
    parameters they stand for.
    """
    # `parameters()` yields each Parameter object once, however many modules hold it.
    stored = sum(_stands_for(parameter) for parameter in module.parameters())
    return stored + sum(
        layer.quantized_parameters for layer in module.modules() if isinstance(layer, Int4Linear)
    )


def _stands_for(parameter: torch.Tensor) -> int:
    if held_blocks(parameter) is not None:
        return parameter.shape[0] * in_features(parameter)
    return parameter.numel()


def module_counts(model: nn.Module) -> list[ModuleCount]:
    """Parameter counts of the top-level modules' children, or of a top-level leaf module itself.

    For `Phi3ForCausalLM` that is `model.embed_tokens`, `model.layers`, `model.norm`,
    `model.rotary_emb`, then `lm_head`, in model order.
    """
    named: list[tuple[str, nn.Module]] = []
    for top_name, top in model.named_children():
        children = list(top.named_children())
        if not children:
            named.append((top_name, top))
        named.extend((f"{top_name}.{child_name}", child) for child_name, child in children)
    holder_of: dict[int, str] = {}  # id of a parameter -> the first listed module that holds it
    counts: list[ModuleCount] = []
    for name, module in named:
        holders = [holder_of.setdefault(id(p), name) for p in module.parameters()]
        shared_with = next((holder for holder in holders if holder != name), None)
        counts.append(
            ModuleCount(name, type(module).__name__, count_parameters(module), shared_with)
        )
    return counts


def _parameter_dtype(model: nn.Module) -> str:
    """E.g. "float32", "bfloat16 linear layers, input embeddings and vocabulary projection,
    float32 elsewhere" (fp32 arithmetic on a bf16 checkpoint's weights), or "int4 linear layers
    (groups of 32), bfloat16 input embeddings and vocabulary projection, float32 elsewhere"."""
    projection = vocabulary_projection(model)
    described: dict[str, list[torch.Tensor]] = {}
    linear_weights = [
        module.weight
        for module in model.modules()
        if isinstance(module, nn.Linear) and module is not projection
    ]
    if linear_weights:
        described["linear layers"] = linear_weights
    for name, module in (
        ("input embeddings", input_embedding(model)),
        ("vocabulary projection", projection),
    ):
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            described[name] = [weight]
    described_ids = {id(weight) for weights in described.values() for weight in weights}
    rest = sorted({_dtype_name(p) for p in model.parameters() if id(p) not in described_ids})
    dtype = "/".join(rest) or "unknown"
    parts = []
    if any(isinstance(layer, Int4Linear) for layer in model.modules()):
        parts.append(f"int4 linear layers (groups of {GROUP_SIZE})")
    by_dtype: dict[str, list[str]] = {}
    for name, weights in described.items():
        weights_dtype = "/".join(sorted({_dtype_name(weight) for weight in weights}))
        if weights_dtype != dtype:
            by_dtype.setdefault(weights_dtype, []).append(name)
    parts += [f"{weights_dtype} {_listed(names)}" for weights_dtype, names in by_dtype.items()]
    return ", ".join([*parts, f"{dtype} elsewhere"]) if parts else dtype


def _listed(names: list[str]) -> str:
    """The names as prose: "a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _dtype_name(weight: torch.Tensor) -> str:
    if held_blocks(weight) is not None:
        # fp32 values, held exactly (`fp32_products.hold_as_blocks`), as the config alone cannot
        # tell before the weights are read (`engine.architecture_before_weights`)
        return "float32"
    return str(weight.dtype).removeprefix("torch.")


def _optional_int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None
