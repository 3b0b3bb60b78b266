"""The architecture report of Phi-3-mini (built without weights) and of small real models."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from model_sources import folder_source
from phi3_lsp.architecture import ArchitectureReport, count_parameters
from phi3_lsp.engine import ModelEngine, architecture_before_weights

PHI3_MINI_PARAMETERS = 3_821_079_552
HIDDEN, FFN, VOCAB, LAYERS = 3072, 8192, 32064, 32


@pytest.fixture(scope="module")
def phi3_mini(phi3_mini_dir: Path) -> ModelEngine:
    source = folder_source(
        phi3_mini_dir,
        weights=False,
        spec="microsoft/Phi-3-mini-4k-instruct",
        hint="No weights here.",
    )
    return ModelEngine.load(source)


@pytest.fixture(scope="module")
def report(phi3_mini: ModelEngine) -> ArchitectureReport:
    return phi3_mini.architecture()


def linear(name: str, in_features: int, out_features: int) -> str:
    return f"({name}): Linear(in_features={in_features}, out_features={out_features}, bias=False)"


def test_the_model_is_on_the_meta_device(phi3_mini: ModelEngine) -> None:
    assert {parameter.device.type for parameter in phi3_mini.model.parameters()} == {"meta"}


def test_the_repr_is_what_print_shows(phi3_mini: ModelEngine, report: ArchitectureReport) -> None:
    assert report.repr == str(phi3_mini.model)
    assert report.repr.startswith("Phi3ForCausalLM(")
    assert f"(0-31): {LAYERS} x Phi3DecoderLayer(" in report.repr


def test_the_repr_shows_phi3_mini_projections(report: ArchitectureReport) -> None:
    assert linear("qkv_proj", HIDDEN, 3 * HIDDEN) in report.repr
    assert linear("o_proj", HIDDEN, HIDDEN) in report.repr
    assert linear("gate_up_proj", HIDDEN, 2 * FFN) in report.repr
    assert linear("down_proj", FFN, HIDDEN) in report.repr
    assert linear("lm_head", HIDDEN, VOCAB) in report.repr
    assert f"Embedding({VOCAB}, {HIDDEN}" in report.repr


def test_phi3_mini_has_its_published_parameter_count(report: ArchitectureReport) -> None:
    assert report.total_parameters == PHI3_MINI_PARAMETERS


def test_the_json_has_the_documented_shape(report: ArchitectureReport) -> None:
    result = report.to_json()
    assert set(result) == {
        "model",
        "className",
        "weightsLoaded",
        "weightsPending",
        "repr",
        "config",
        "parameters",
    }
    assert result["model"] == "microsoft/Phi-3-mini-4k-instruct"
    assert result["className"] == "Phi3ForCausalLM"
    assert result["weightsLoaded"] is False
    assert result["weightsPending"] is False
    assert result["config"] == {
        "modelType": "phi3",
        "layers": LAYERS,
        "hiddenSize": HIDDEN,
        "intermediateSize": FFN,
        "attentionHeads": 32,
        "keyValueHeads": 32,
        "headDim": 96,
        "vocabSize": VOCAB,
        "contextLength": 4096,
        "dtype": "float32",
        "tieWordEmbeddings": False,
    }
    assert result["parameters"]["total"] == PHI3_MINI_PARAMETERS


def test_modules_are_listed_in_model_order_with_their_counts(report: ArchitectureReport) -> None:
    rows = [(entry.name, entry.type, entry.count) for entry in report.by_module]
    per_layer = HIDDEN * 3 * HIDDEN + HIDDEN * HIDDEN + HIDDEN * 2 * FFN + FFN * HIDDEN + 2 * HIDDEN
    assert rows == [
        ("model.embed_tokens", "Embedding", VOCAB * HIDDEN),
        ("model.layers", "ModuleList", LAYERS * per_layer),
        ("model.norm", "Phi3RMSNorm", HIDDEN),
        ("model.rotary_emb", "Phi3RotaryEmbedding", 0),
        ("lm_head", "Linear", HIDDEN * VOCAB),
    ]
    assert sum(count for _, _, count in rows) == report.total_parameters


def test_the_report_is_json_serializable(report: ArchitectureReport) -> None:
    import json

    assert json.loads(json.dumps(report.to_json())) == report.to_json()


def test_tied_embeddings_are_counted_once() -> None:
    def build(tied: bool) -> torch.nn.Module:
        config = LlamaConfig(
            vocab_size=1000,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            tie_word_embeddings=tied,
        )
        with torch.device("meta"):
            model: torch.nn.Module = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
        return model

    untied, tied = build(False), build(True)
    assert count_parameters(tied) == count_parameters(untied) - 1000 * 32


def test_a_grouped_query_model_reports_its_key_value_heads(smollm2_dir: Path) -> None:
    source = folder_source(smollm2_dir, weights=False, spec="smollm2-135m")
    result = ModelEngine.load(source).architecture().to_json()
    config = result["config"]
    assert (config["attentionHeads"], config["keyValueHeads"], config["headDim"]) == (9, 3, 64)
    assert config["tieWordEmbeddings"] is True
    hidden, kv, ffn = 576, 3 * 64, 1536
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * ffn + 2 * hidden
    # The tied lm_head shares the embedding: counted once in the total, and said so in its row.
    assert result["parameters"]["total"] == 49152 * hidden + 30 * per_layer + hidden
    rows = result["parameters"]["byModule"]
    assert [(row["name"], row["sharedWith"]) for row in rows] == [
        ("model.embed_tokens", None),
        ("model.layers", None),
        ("model.norm", None),
        ("model.rotary_emb", None),
        ("lm_head", "model.embed_tokens"),
    ]
    unshared = sum(row["count"] for row in rows if row["sharedWith"] is None)
    assert unshared == result["parameters"]["total"]


@pytest.mark.parametrize("weights", ["on disk", "to download"])
@pytest.mark.parametrize("checkpoint", ["tiny_phi3_dir", "tiny_bf16_phi3_dir", "smollm2_dir"])
def test_the_architecture_before_the_weights_is_the_loaded_models(
    checkpoint: str, weights: str, request: pytest.FixtureRequest
) -> None:
    # Shown while the weights download or load (minutes for Phi-3-mini): the loaded model must
    # not show another tree, other counts or other dtypes (a bf16 checkpoint keeps bf16
    # weights, which the config declares before they have come).
    folder = request.getfixturevalue(checkpoint)
    on_disk = folder_source(folder, weights=True)
    to_download = replace(folder_source(folder, weights=False), weights_pending=True)
    before = architecture_before_weights(on_disk if weights == "on disk" else to_download)
    loaded = ModelEngine.load(on_disk).architecture().to_json()
    assert (before.weights_loaded, before.weights_pending) == (False, True)
    assert (loaded["weightsLoaded"], loaded["weightsPending"]) == (True, False)
    unchanged = ["model", "className", "repr", "config", "parameters"]
    assert {key: before.to_json()[key] for key in unchanged} == {
        key: loaded[key] for key in unchanged
    }


def test_the_architecture_before_the_weights_leaves_torchs_default_dtype_alone(
    tiny_bf16_phi3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It is built on a thread beside the model thread's load: a default dtype it set would be
    # the dtype of the weights that load creates meanwhile.
    defaults_set: list[torch.dtype] = []
    set_default_dtype = torch.set_default_dtype

    def recorded(dtype: torch.dtype) -> None:
        defaults_set.append(dtype)
        set_default_dtype(dtype)

    monkeypatch.setattr(torch, "set_default_dtype", recorded)
    for weights in (True, False):
        architecture_before_weights(folder_source(tiny_bf16_phi3_dir, weights=weights))
    assert defaults_set == []


def test_the_architecture_before_the_weights_of_a_model_without_weights_is_its_report(
    tiny_bf16_phi3_dir: Path, tmp_path: Path
) -> None:
    # The default model offline: its config declares bf16 weights, but none will come.
    for file in tiny_bf16_phi3_dir.glob("*.json"):
        shutil.copy2(file, tmp_path / file.name)
    source = folder_source(tmp_path, weights=False)
    loaded = ModelEngine.load(source).architecture().to_json()
    assert architecture_before_weights(source).to_json() == loaded
