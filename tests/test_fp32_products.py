"""fp32 models: one-token passes read their weights through our kernel, and the text stays the
model's own greedy text."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from block_values import q4_1_values, q8_0_values
from phi3_lsp.architecture import count_parameters
from phi3_lsp.cpu_kernels import (
    FP32_BUILDS,
    Q4_1,
    Q8_0,
    Build,
    Fp32Kernel,
    build_library,
    compiler_command,
    held_blocks,
    own_fp32_kernel,
)
from phi3_lsp.engine import ModelEngine
from phi3_lsp.fp32_products import (
    BF16_ROWS_AT_MOST,
    ROWS_AT_MOST,
    hold_as_blocks,
    read_at_memory_speed,
    reads_rows_alike,
)
from phi3_lsp.kv_cache import GrowingCache
from phi3_lsp.layer_kernel import run_layers_in_one_call
from phi3_lsp.pass_planner import MAX_DRAFT
from phi3_lsp.quantize import input_embedding
from phi3_lsp.row_attention import attend_row_by_row
from phi3_lsp.sources import resolve_model
from resident_pages import resident_kb
from tiny_llama import VOCABULARY, prompt_then_steps

RUNNABLE = [build for build in FP32_BUILDS if build.runs_here()]
pytestmark = pytest.mark.skipif(
    not RUNNABLE, reason="the fp32 kernel needs an x86-64 CPU with AVX2 and FMA"
)


class CountingKernel(Fp32Kernel):
    """Our fp32 kernel, counting the products asked of it."""

    def __init__(self, kernel: Fp32Kernel) -> None:
        self.__dict__.update(kernel.__dict__)
        self.calls = 0

    def multiply(self, rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().multiply(rows, weight)


@pytest.fixture(scope="module", params=RUNNABLE, ids=lambda build: build.name)
def kernel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Fp32Kernel:
    build: Build = request.param
    return Fp32Kernel(build_library(build, tmp_path_factory.mktemp("cache"), compiler_command()))


def tiny_fp32_llama(hidden_size: int = 96, tied_embeddings: bool = False) -> nn.Module:
    """96 wide by default; 128 gives heads of 32, which our decoder layer kernel takes."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCABULARY,
        hidden_size=hidden_size,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tied_embeddings,
    )
    model: nn.Module = LlamaForCausalLM(config)
    model.eval()
    return model


def test_short_passes_take_our_kernel_and_a_prompt_torchs(kernel: Fp32Kernel) -> None:
    model = tiny_fp32_llama()
    torchs = copy.deepcopy(model)
    counting = CountingKernel(kernel)

    layers = read_at_memory_speed(model, counting)
    prompt_length = ROWS_AT_MOST + 1
    ours, theirs = prompt_then_steps(model, prompt_length), prompt_then_steps(torchs, prompt_length)

    assert layers == sum(isinstance(module, nn.Linear) for module in torchs.modules())
    assert reads_rows_alike(model) and not reads_rows_alike(torchs)
    assert counting.calls == 3 * layers  # the three one-token passes, not the prompt's
    assert torch.equal(ours[0], theirs[0])
    for step, (one, other) in enumerate(zip(ours[1:], theirs[1:], strict=True)):
        assert torch.allclose(one, other, rtol=1e-4, atol=1e-5), f"step {step + 1} differs"


def test_a_bf16_weight_takes_our_kernel_in_longer_passes(kernel: Fp32Kernel) -> None:
    # torch's products would widen the whole weight first.
    layer = nn.Linear(96, 64, bias=False).to(torch.bfloat16)
    counting = CountingKernel(kernel)
    read_at_memory_speed(layer, counting)
    widened = layer.weight.float()
    with torch.inference_mode():
        for rows, our_calls in ((BF16_ROWS_AT_MOST, 1), (BF16_ROWS_AT_MOST + 1, 1)):
            inputs = torch.randn(rows, 96)
            products = layer(inputs)
            torch.testing.assert_close(products, inputs @ widened.T, rtol=1e-5, atol=1e-5)
            assert counting.calls == our_calls, f"{rows} rows"


def test_a_bf16_weight_takes_the_tiles_in_passes_beyond_our_kernels() -> None:
    kernel = own_fp32_kernel()
    if kernel is None or not kernel.has_tiles:
        pytest.skip("the fp32 tiles need a CPU with AMX-BF16 whose tiles Linux lends")
    layer = nn.Linear(96, 64, bias=False).to(torch.bfloat16)
    counting = CountingKernel(kernel)
    read_at_memory_speed(layer, counting)
    inputs = torch.randn(BF16_ROWS_AT_MOST + 1, 96)
    with torch.inference_mode():
        products = layer(inputs)
    assert counting.calls == 0
    assert torch.equal(products, kernel.multiply_on_tiles(inputs, layer.weight))


def test_a_short_pass_gives_each_row_the_bits_of_one_row_passes(kernel: Fp32Kernel) -> None:
    model = tiny_fp32_llama()
    read_at_memory_speed(model, kernel)
    assert attend_row_by_row(model)
    tokens = torch.arange(20, 20 + 12)[None]
    prompt, fed = tokens[:, : -1 - MAX_DRAFT], tokens[:, -1 - MAX_DRAFT :]
    with torch.inference_mode():
        cache = GrowingCache()
        model(input_ids=prompt, cache=cache)
        together = model(input_ids=fed, cache=cache).logits[0]
        cache = GrowingCache()
        model(input_ids=prompt, cache=cache)
        alone = [
            model(input_ids=fed[:, [i]], cache=cache).logits[0, 0] for i in range(fed.shape[1])
        ]
    assert fed.shape[1] <= ROWS_AT_MOST
    for row, logits in enumerate(alone):
        assert torch.equal(together[row], logits), f"row {row} differs"


@pytest.mark.parametrize("in_one_call", [False, True], ids=["transformers-layers", "one-call"])
def test_weights_of_exact_blocks_are_held_so_with_the_same_bits(
    kernel: Fp32Kernel, in_one_call: bool
) -> None:
    # As a checkpoint dequantized from GGUF holds them (SmolLM2's): the decoder layers' Q4_1
    # blocks, the vocabulary projection's Q8_0 ones, tied to the input embedding.
    model: Any = tiny_fp32_llama(hidden_size=128, tied_embeddings=True)
    projection = model.get_output_embeddings()
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    for seed, linear in enumerate(linears):
        values = q8_0_values if linear is projection else q4_1_values
        linear.weight.data = values(linear.out_features, linear.in_features, seed)
    parameters = model.num_parameters()
    held: Any = copy.deepcopy(model)
    for each in (model, held):  # as loaded
        read_at_memory_speed(each, kernel)
        if in_one_call and not (attend_row_by_row(each) and run_layers_in_one_call(each)):
            pytest.skip("the decoder layer kernel needs AVX-512 BF16 and VBMI")

    assert hold_as_blocks(held, kernel) == len(linears)
    if in_one_call:  # as `ModelEngine.hold_weights_compactly` does: the layers read the blocks
        assert run_layers_in_one_call(held) == held.config.num_hidden_layers
        # ... through the kernel given them alone, not one given the fp32 weights before
        assert all(layer.forward.had is None for layer in held.model.layers)
    held_linears = [module for module in held.modules() if isinstance(module, nn.Linear)]
    assert [held_blocks(linear.weight) for linear in held_linears] == [
        Q8_0 if linear is held.get_output_embeddings() else Q4_1 for linear in held_linears
    ]
    # Still tied: the embedding looks its rows up in the same blocks, one parameter.
    assert held.get_input_embeddings().weight is held.get_output_embeddings().weight
    assert count_parameters(held) == parameters
    prompt_length = ROWS_AT_MOST + 4  # a prompt pass of torch's products, then ours
    ours, theirs = prompt_then_steps(held, prompt_length), prompt_then_steps(model, prompt_length)
    for step, (one, other) in enumerate(zip(ours, theirs, strict=True)):
        assert torch.equal(one, other), f"pass {step} differs"


def test_held_weights_give_their_pages_of_the_checkpoint_back(
    kernel: Fp32Kernel, tmp_path: Path
) -> None:
    model: Any = tiny_fp32_llama(hidden_size=128)
    for linear in (module for module in model.modules() if isinstance(module, nn.Linear)):
        linear.weight.data = q4_1_values(linear.out_features, linear.in_features)
    model.save_pretrained(tmp_path)
    checkpoint = tmp_path / "model.safetensors"
    loaded: Any = LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    read_at_memory_speed(loaded, kernel)
    linears = [module for module in loaded.modules() if isinstance(module, nn.Linear)]
    for linear in linears:
        linear.weight.sum()  # read: resident, as after a first pass
    before = resident_kb(checkpoint)
    assert before > 0  # the weights are views of the checkpoint's mapping

    assert hold_as_blocks(loaded, kernel) == len(linears)

    released_kb = before - resident_kb(checkpoint)
    weights_kb = sum(4 * linear.out_features * linear.in_features for linear in linears) // 1024
    assert released_kb >= weights_kb - 8 * len(linears)  # all but the pages at their ends


def test_other_fp32_weights_are_held_as_they_are(kernel: Fp32Kernel) -> None:
    model = tiny_fp32_llama()  # drawn at random: no block is d * q + m
    read_at_memory_speed(model, kernel)
    assert hold_as_blocks(model, kernel) == 0
    model = tiny_fp32_llama()
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    for linear in linears:
        linear.weight.data = q4_1_values(linear.out_features, linear.in_features)
    assert hold_as_blocks(model, kernel) == 0  # not without our forward, which reads the blocks
    read_at_memory_speed(model, kernel)
    assert hold_as_blocks(model, kernel) == len(linears)


def test_smollm2_in_fp32_holds_its_weights_as_the_exact_blocks_of_its_gguf(
    smollm2_engine: ModelEngine, smollm2_dir: Path
) -> None:
    # Its checkpoint is dequantized from a GGUF whose linear layers are Q4_1 and whose
    # embedding, which the vocabulary projection shares, is Q8_0.
    model: Any = smollm2_engine.model
    projection = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m is not projection]
    assert len(linears) == 7 * model.config.num_hidden_layers
    assert all(held_blocks(linear.weight) is Q4_1 for linear in linears)
    assert held_blocks(projection.weight) is Q8_0
    assert model.get_input_embeddings().weight is projection.weight
    report = smollm2_engine.architecture()
    assert report.config.dtype == "float32"  # the values are fp32's, exactly
    seeds: Any = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    assert report.total_parameters == seeds.num_parameters()
    assert report.repr == repr(seeds)


@pytest.mark.parametrize("checkpoint", ["tiny_bf16_phi3_dir", "tiny_tied_bf16_phi3_dir"])
def test_a_bf16_checkpoint_keeps_its_weights_in_bf16_with_fp32s_arithmetic(
    request: pytest.FixtureRequest, checkpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder: Path = request.getfixturevalue(checkpoint)
    # Where the CPU has AMX, long passes take the tiles, whose sums round in their own order
    # (tested above and in test_fp32_kernel); here a long pass takes torch's products.
    monkeypatch.setattr(own_fp32_kernel(), "has_tiles", False)
    engine = ModelEngine.load(resolve_model(str(folder)))
    linears = [module for module in engine.model.modules() if isinstance(module, nn.Linear)]
    embedding = input_embedding(engine.model)
    assert embedding is not None and embedding.weight.dtype == torch.bfloat16
    assert all(linear.weight.dtype == torch.bfloat16 for linear in linears)  # half the memory
    assert all(
        parameter.dtype == torch.float32
        for name, parameter in engine.model.named_parameters()
        if "norm" in name
    )
    # The same checkpoint widened to fp32 as it is loaded, through the same kernels.
    widened: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    widened.eval()
    kernel = own_fp32_kernel()
    assert kernel is not None
    read_at_memory_speed(widened, kernel, rows_at_most=BF16_ROWS_AT_MOST)  # a bf16 weight's
    run_layers_in_one_call(widened)
    attend_row_by_row(widened)

    prompt_length = BF16_ROWS_AT_MOST + 4  # a prompt pass of torch's products, then ours
    ours = prompt_then_steps(engine.model, prompt_length)
    theirs = prompt_then_steps(widened, prompt_length)

    for step, (one, other) in enumerate(zip(ours, theirs, strict=True)):
        assert one.dtype == torch.float32
        assert torch.equal(one, other), f"pass {step} differs"


@pytest.mark.parametrize("engine_fixture", ["smollm2_engine", "smollm2_engine_without_avx512"])
@pytest.mark.parametrize(
    "prompt", ["The capital of France is", "def fibonacci(n):\n    if n < 2:\n        return"]
)
def test_smollm2_in_fp32_gives_transformers_greedy_text(
    request: pytest.FixtureRequest, engine_fixture: str, smollm2_dir: Path, prompt: str
) -> None:
    engine: ModelEngine = request.getfixturevalue(engine_fixture)
    # The seed's way: transformers' own generate(), greedy, torch's kernels throughout.
    model: Any = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model.eval()
    prompt_ids = engine.tokenizer.encode_prompt(prompt)
    with torch.inference_mode():
        generated = model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=50, do_sample=False, top_p=None, top_k=None
        )[0, len(prompt_ids) :].tolist()
    while generated and generated[-1] in engine.eos_token_ids:
        generated.pop()

    ours = engine.generate(prompt_ids, max_new_tokens=50)

    assert list(ours.token_ids) == generated
