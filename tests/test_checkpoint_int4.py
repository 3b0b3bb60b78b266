"""4-bit layers made from a checkpoint's files one weight at a time: to the bit the tensors of
quantizing the loaded model, or none where the files do not hold its values as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from phi3_lsp.checkpoint_int4 import int4_tensors_from_files
from phi3_lsp.quantize import int4_tensors, quantize_to_int4


def shapes(folder: Path) -> nn.Module:
    with torch.device("meta"):
        model: nn.Module = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            AutoConfig.from_pretrained(folder)
        )
    return model


def copy_of(folder: Path, destination: Path) -> Path:
    for file in folder.iterdir():
        (destination / file.name).write_bytes(file.read_bytes())
    return destination


def quantized_after_loading(folder: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto")
    quantize_to_int4(model)
    return int4_tensors(model)


@pytest.mark.parametrize("checkpoint", ["tiny_bf16_phi3_dir", "tiny_tied_bf16_phi3_dir"])
def test_the_files_give_the_tensors_of_the_quantized_loaded_model(
    checkpoint: str, request: pytest.FixtureRequest
) -> None:
    folder: Path = request.getfixturevalue(checkpoint)
    from_files = int4_tensors_from_files(shapes(folder), folder)
    assert from_files is not None
    expected = quantized_after_loading(folder)
    assert from_files.keys() == expected.keys()
    assert all(torch.equal(from_files[name], expected[name]) for name in expected)


def test_a_checkpoint_not_all_in_bf16_is_left_to_the_load(tiny_phi3_dir: Path) -> None:
    # A load in the config's dtype may narrow wider values: only the loaded model knows them.
    assert {t.dtype for t in load_file(next(tiny_phi3_dir.glob("*.safetensors"))).values()} != {
        torch.bfloat16
    }
    assert int4_tensors_from_files(shapes(tiny_phi3_dir), tiny_phi3_dir) is None


def test_a_checkpoint_whose_weights_the_load_renames_is_left_to_the_load(
    tiny_bf16_phi3_dir: Path, tmp_path: Path
) -> None:
    weights = next(copy_of(tiny_bf16_phi3_dir, tmp_path).glob("*.safetensors"))
    tensors = load_file(weights)
    renamed = {name.replace("qkv_proj", "qkv"): tensor for name, tensor in tensors.items()}
    save_file(renamed, str(weights), metadata={"format": "pt"})
    assert int4_tensors_from_files(shapes(tmp_path), tmp_path) is None


def test_a_checkpoint_its_config_loads_in_fp16_is_left_to_the_load(
    tiny_bf16_phi3_dir: Path, tmp_path: Path
) -> None:
    # fp16 rounds bf16 values: only the loaded model knows what the load made of them.
    config = json.loads((copy_of(tiny_bf16_phi3_dir, tmp_path) / "config.json").read_text())
    config["dtype"] = "float16"
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert int4_tensors_from_files(shapes(tmp_path), tmp_path) is None
