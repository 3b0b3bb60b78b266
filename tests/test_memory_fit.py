"""What a model's weights need in memory, known before loading, and what is said when they do
not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from model_sources import folder_source
from phi3_lsp import memory_fit
from phi3_lsp.cpu_kernels import own_fp32_kernel
from phi3_lsp.engine import ModelEngine
from phi3_lsp.fp32_products import stored_in_bf16
from phi3_lsp.memory_fit import (
    RUNTIME_BYTES,
    drafter_fits,
    kv_bytes_per_token,
    memory_shortfall,
    quantizing_fits,
    room_for_a_completion,
    weights_bytes,
)
from phi3_lsp.other_servers import OtherProcess
from phi3_lsp.quantize import int4_tensors
from phi3_lsp.settings import WeightFormat

GB = 10**9


def meta_model(folder: Path) -> nn.Module:
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model: nn.Module = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            config, dtype=torch.float32
        )
    return model


def bytes_held(model: nn.Module) -> int:
    """What a loaded model's weights take: its parameters and its 4-bit tensors."""
    tensors: dict[int, torch.Tensor] = {id(tensor): tensor for tensor in model.parameters()}
    tensors |= {id(tensor): tensor for tensor in int4_tensors(model).values()}
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())


def assert_estimate_matches_the_load(
    folder: Path, weights: WeightFormat, *, bf16_held: bool = False
) -> None:
    estimate = weights_bytes(meta_model(folder), weights, bf16_held=bf16_held)
    engine = ModelEngine.load(folder_source(folder, weights=True), weights=weights)
    assert engine.has_weights
    assert estimate == pytest.approx(bytes_held(engine.model), rel=0.02)


@pytest.mark.parametrize("weights", ["fp32", "int4"])
def test_the_estimate_is_what_loading_the_weights_takes(
    weights: WeightFormat, tiny_phi3_dir: Path
) -> None:
    assert_estimate_matches_the_load(tiny_phi3_dir, weights)


@pytest.mark.skipif(own_fp32_kernel() is None, reason="fp32 holds bf16 weights for our kernel")
@pytest.mark.parametrize("checkpoint", ["tiny_bf16_phi3_dir", "tiny_tied_bf16_phi3_dir"])
def test_the_estimate_is_what_fp32_takes_from_a_bf16_checkpoint(
    request: pytest.FixtureRequest, checkpoint: str
) -> None:
    # A tied vocabulary projection is the input embeddings' weight, held once.
    folder: Path = request.getfixturevalue(checkpoint)
    assert stored_in_bf16(folder)
    assert_estimate_matches_the_load(folder, "fp32", bf16_held=True)


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["fp32", "int4"])
def test_the_estimate_is_what_smollm2_takes(weights: WeightFormat, smollm2_dir: Path) -> None:
    # Tied embeddings: the vocabulary projection's weight is the embeddings', held once.
    assert_estimate_matches_the_load(smollm2_dir, weights)


def test_a_model_that_fits_is_loaded(phi3_mini_dir: Path) -> None:
    model = meta_model(phi3_mini_dir)
    assert memory_shortfall("Phi-3-mini", model, "fp32", 32 * GB) is None
    assert memory_shortfall("Phi-3-mini", model, "int4", 8 * GB) is None


def test_unknown_memory_never_stops_a_load(phi3_mini_dir: Path) -> None:
    assert memory_shortfall("Phi-3-mini", meta_model(phi3_mini_dir), "fp32", None) is None


def test_fp32_phi3_on_a_16_gb_laptop_is_told_to_use_int4(phi3_mini_dir: Path) -> None:
    # Phi-3-mini's 3.8 billion parameters take 15.3 GB in fp32, about a quarter in int4; the
    # server and a completion's keys and values (0.8 GB) come on top.
    message = memory_shortfall("Phi-3-mini", meta_model(phi3_mini_dir), "fp32", 10 * GB)
    assert message is not None
    assert message.startswith("Phi-3-mini in fp32 needs about 16.")
    assert "10.0 GB is free" in message
    assert "loaded without weights" in message
    assert 'set phi3.weights to "int4" (it needs about 4.' in message
    assert "phi3.model" in message


def test_another_windows_server_holding_the_memory_is_named_with_the_fix(
    phi3_mini_dir: Path,
) -> None:
    # The second window's server finds 1.2 GB free: the first window's holds 8.1 GB.
    model = meta_model(phi3_mini_dir)
    first_window = [OtherProcess(pid=4242, private_bytes=8_100_000_000)]
    message = memory_shortfall(
        "Phi-3-mini", model, "fp32", int(1.2 * GB), bf16_held=True, find_others=lambda: first_window
    )
    assert message is not None
    assert "Another phi3-lsp process holds 8.1 GB (process 4242, perhaps another editor" in message
    assert "To complete, stop it and restart this server, or set phi3.model" in message
    two = [OtherProcess(4242, 4_100_000_000), OtherProcess(4343, 4_000_000_000)]
    message = memory_shortfall(
        "Phi-3-mini", model, "fp32", int(1.2 * GB), bf16_held=True, find_others=lambda: two
    )
    assert message is not None
    assert "2 other phi3-lsp processes hold 8.1 GB (processes 4242, 4343," in message
    assert "stop them and restart this server" in message


def test_other_servers_too_small_to_make_room_are_not_blamed(phi3_mini_dir: Path) -> None:
    small = [OtherProcess(pid=4242, private_bytes=300_000_000)]  # a server without a model
    message = memory_shortfall(
        "Phi-3-mini", meta_model(phi3_mini_dir), "fp32", 8 * GB, find_others=lambda: small
    )
    assert message is not None
    assert "4242" not in message
    assert "free memory and restart the server" in message


def test_fp32_phi3_from_its_bf16_checkpoint_fits_a_16_gb_laptop(phi3_mini_dir: Path) -> None:
    # Its linear weights and embedding stay bf16 (7.6 GB), widened as they are read; the server
    # and a completion's keys and values (0.8 GB) come on top.
    model = meta_model(phi3_mini_dir)
    assert memory_shortfall("Phi-3-mini", model, "fp32", 10 * GB, bf16_held=True) is None
    message = memory_shortfall("Phi-3-mini", model, "fp32", 8 * GB, bf16_held=True)
    assert message is not None
    assert message.startswith("Phi-3-mini in fp32 needs about 9.0 GB")


def test_a_checkpoint_with_any_tensor_beside_bf16_is_not_held_in_bf16(
    tiny_phi3_dir: Path, tiny_bf16_phi3_dir: Path, tmp_path: Path
) -> None:
    assert not stored_in_bf16(tiny_phi3_dir)  # fp32: holding it in bf16 would round it
    assert not stored_in_bf16(tmp_path)  # no weights at all
    (tmp_path / "model.safetensors").write_bytes(b"not a checkpoint")
    assert not stored_in_bf16(tmp_path)


def test_when_int4_does_not_fit_either_only_the_other_fixes_are_offered(
    phi3_mini_dir: Path,
) -> None:
    model = meta_model(phi3_mini_dir)
    for weights in ("fp32", "int4"):
        message = memory_shortfall("Phi-3-mini", model, weights, 2 * GB)
        assert message is not None
        assert f"Phi-3-mini in {weights} needs about" in message
        assert "phi3.weights" not in message
        assert "free memory and restart the server" in message
        assert "phi3.model to a smaller model" in message


def test_a_token_of_phi3_mini_keeps_768_kib_of_keys_and_values(phi3_mini_dir: Path) -> None:
    # Keys and values, 32 layers, 32 heads of 96, in fp32.
    config = AutoConfig.from_pretrained(phi3_mini_dir)
    assert kv_bytes_per_token(config) == 2 * 32 * 32 * 96 * 4


def test_weights_that_fit_without_room_for_a_completion_are_not_loaded(
    phi3_mini_dir: Path,
) -> None:
    model = meta_model(phi3_mini_dir)
    # A completion at the default budget (1,024 prompt and 50 new tokens) holds ~0.8 GB.
    weights_and_server = RUNTIME_BYTES + weights_bytes(model, "int4")
    assert memory_shortfall("Phi-3-mini", model, "int4", weights_and_server + GB // 2) is not None
    assert memory_shortfall("Phi-3-mini", model, "int4", weights_and_server + GB) is None


def test_room_for_a_completion_grows_with_prompts_longer_than_the_default_budget() -> None:
    per_token = 2 * 32 * 32 * 96 * 4  # Phi-3-mini in fp32
    short = room_for_a_completion(per_token, 20)
    assert short == room_for_a_completion(per_token, 1074)  # the default 1,024 + 50 tokens
    assert room_for_a_completion(per_token, 4096) - short == (4096 - 1074) * per_token


def test_the_check_leaves_the_checkpoint_dtype_for_the_load(
    tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # An int4 load reads a bf16 checkpoint in bf16: Phi-3-mini never has a 15 GB fp32 copy.
    bf16 = AutoModelForCausalLM.from_pretrained(tiny_phi3_dir, dtype=torch.bfloat16)
    bf16.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_phi3_dir / name).read_bytes())
    saved = AutoConfig.from_pretrained(tmp_path).dtype
    engine = ModelEngine.load(folder_source(tmp_path, weights=True), weights="int4")
    assert saved == torch.bfloat16
    assert engine.config.dtype == torch.bfloat16


def test_making_phi3_minis_4bit_layers_beside_it_needs_room_for_what_it_reads(
    phi3_mini_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Measured: making them in another process peaked at 10.7 GB (Phi-3-mini-sized, its bf16
    # checkpoint 7.6 GB, the 4-bit form ~2.3 GB, torch and transformers); the estimate is
    # 11.6 GB (the 4-bit form's count is an upper bound).
    model = meta_model(phi3_mini_dir)
    checkpoint = 2 * sum(parameter.numel() for parameter in model.parameters())  # bf16
    monkeypatch.setattr(memory_fit, "available_memory", lambda: 11 * GB)
    assert not quantizing_fits(model, checkpoint)
    monkeypatch.setattr(memory_fit, "available_memory", lambda: 12 * GB)
    assert quantizing_fits(model, checkpoint)
    # Once they are made, the 4-bit copy fits in far less (with a completion's room: 4.2 GB).
    monkeypatch.setattr(memory_fit, "available_memory", lambda: 5 * GB)
    assert drafter_fits(model)
    assert not drafter_fits(model, checkpoint)  # quantized here, it would read the checkpoint
    # Measured: one weight at a time from its bf16 files, the other process peaked at 3.3-3.7 GB:
    # a 16 GB machine holding Phi-3-mini in fp32 (7.3 GiB) has that left; the estimate is 5.5.
    assert not quantizing_fits(model, checkpoint, from_files=True)
    monkeypatch.setattr(memory_fit, "available_memory", lambda: 6 * GB)
    assert quantizing_fits(model, checkpoint, from_files=True)
