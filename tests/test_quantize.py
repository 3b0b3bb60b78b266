"""int4 weights: the layers, a whole model in int4, and SmolLM2's reference outputs."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import PreTrainedModel

from conftest import TINY_PHI3
from model_sources import folder_source
from phi3_lsp.architecture import count_parameters, describe_model
from phi3_lsp.engine import ModelEngine
from phi3_lsp.int4_weights import GROUP_SIZE, has_native_bf16
from phi3_lsp.quantize import Int4Linear, quantize_to_int4
from phi3_lsp.screened_projection import MAX_SCREENED_ROWS, ScreenedProjection


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def on_four_bit_grid(out_features: int, in_features: int) -> torch.Tensor:
    """Weights as a Q4_1 checkpoint holds them: per group of 32, 16 evenly spaced values."""
    groups = (out_features, in_features // GROUP_SIZE, 1)
    scales, lows = torch.rand(groups) * 0.02 + 0.001, torch.randn(groups) * 0.1
    codes = torch.randint(0, 16, (out_features, in_features // GROUP_SIZE, GROUP_SIZE))
    codes[..., 0], codes[..., 1] = 0, 15  # every group spans its whole range
    return (codes * scales + lows).reshape(out_features, in_features)


@pytest.mark.usefixtures("seeded")
class TestInt4Linear:
    def test_weights_from_a_4_bit_checkpoint_lose_only_bf16_rounding(self) -> None:
        linear = nn.Linear(256, 96, bias=True)
        linear.weight.data = on_four_bit_grid(96, 256)
        inputs = torch.randn(2, 3, 256)
        with torch.inference_mode():
            expected, actual = linear(inputs), Int4Linear(linear)(inputs)
        assert actual.shape == (2, 3, 96) and actual.dtype == torch.float32
        assert relative_error(actual, expected) < 0.01

    def test_any_weights_come_close(self) -> None:
        linear = nn.Linear(512, 64, bias=False)
        inputs = torch.randn(4, 512)
        with torch.inference_mode():
            error = relative_error(Int4Linear(linear)(inputs), linear(inputs))
        # 16 levels per group of 32 Gaussian weights: a few percent, not more.
        assert error < 0.1

    def test_it_stands_for_as_many_parameters_as_the_layer_had(self) -> None:
        layer = Int4Linear(nn.Linear(64, 32, bias=True))
        assert layer.quantized_parameters == 64 * 32
        assert count_parameters(layer) == 64 * 32 + 32  # the bias stays a parameter
        assert "bits=4, group_size=32" in repr(layer)

    def test_casting_the_model_leaves_the_packed_weights_usable(self) -> None:
        model = nn.Sequential(Int4Linear(nn.Linear(64, 32)))
        inputs = torch.randn(1, 64)
        with torch.inference_mode():
            before = model(inputs)
            model.float()
            assert torch.equal(model(inputs), before)


UNPACK_CHECK = """
import torch
from phi3_lsp.int4_weights import DEQUANTIZED_FROM_ROWS, GROUP_SIZE, Int4Weight, _pack, can_unpack
from phi3_lsp.int4_weights import unpack_codes

torch.manual_seed(0)
codes = torch.randint(0, 16, (192, 64), dtype=torch.int32)
assert can_unpack(192), torch.backends.cpu.get_cpu_capability()
assert torch.equal(unpack_codes(_pack(codes), 64).int(), codes), "codes differ"

weight = Int4Weight.quantize(torch.randn(192, 256))
rows = torch.randn(DEQUANTIZED_FROM_ROWS + 8, 256).to(torch.bfloat16)
kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(
    rows, weight.packed, GROUP_SIZE, weight.scales_by_group().contiguous()
)

# Unpacked to fp32: the kernel's sums in another order, so outputs may differ from the kernel's,
# by at most one bf16 rounding step and rarely (on some CPUs, none differ).
unpacked = weight.multiply_unpacked(rows, torch.float32)
differ = unpacked != kernel
assert differ.float().mean() < 0.01, f"{differ.float().mean():.2%} of outputs differ"
steps = (unpacked.float() - kernel.float()).abs() / kernel.float().abs().clamp(min=1e-3)
worst = float(steps[differ].max()) if differ.any() else 0.0
assert worst <= 2**-7, f"outputs differ by {worst}"

# Unpacked to bf16, the weights round once more: at most twice as far from the exact product
# as the kernel's outputs, which round to bf16 once.
exact = rows.double() @ weight._unpacked(0, 192).double().T
def error(products):
    return float((products.double() - exact).norm() / exact.norm())
assert error(weight.multiply_unpacked(rows, torch.bfloat16)) <= 2 * error(kernel)

# Whatever way this CPU multiplies a long prompt's rows: as close, and the same bits on any
# number of threads (a pass may run on 1 or 2, and the greedy text must not depend on it).
products = []
for threads in (1, 2):
    torch.set_num_threads(threads)
    products.append(weight.multiply(rows))
assert torch.equal(products[0], products[1]), "the threads changed the products"
assert error(products[0]) <= 2 * error(kernel)
print(torch.backends.cpu.get_cpu_capability())
"""


HAS_AVX512 = torch.backends.cpu.get_cpu_capability() == "AVX512"


@pytest.mark.parametrize(
    "capability",
    [
        pytest.param("avx512", marks=pytest.mark.skipif(not HAS_AVX512, reason="no AVX-512")),
        "avx2",
        "default",
    ],
)
def test_packed_weights_unpack_to_the_kernels_products(capability: str) -> None:
    # The packed layout depends on the CPU code torch runs, which ATEN_CPU_CAPABILITY selects:
    # AVX-512 (on a CPU that has it), AVX2 (also on a CPU with AVX-512) and the one without
    # vector instructions.
    result = subprocess.run(
        [sys.executable, "-c", UNPACK_CHECK],
        capture_output=True,
        text=True,
        env={**os.environ, "ATEN_CPU_CAPABILITY": capability},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == capability.upper()


LENGTHS_CHECK = """
import torch
from phi3_lsp.int4_weights import Int4Weight
from phi3_lsp.memory_release import release_freed_memory

def resident_mib():
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024

torch.manual_seed(0)
weights = [Int4Weight.quantize(torch.randn(shape)) for shape in ((1536, 576), (576, 1536))]
rows = torch.randn(512, 1536).to(torch.bfloat16)

def read_prompts(lengths):
    for length in lengths:
        for weight in weights:
            weight.multiply_unpacked(rows[:length, : weight.in_features], torch.bfloat16)

read_prompts(range(192, 513, 64))
release_freed_memory()
before = resident_mib()
read_prompts(range(192, 512))
release_freed_memory()
print(resident_mib() - before)
"""


@pytest.mark.skipif(not has_native_bf16(), reason="bf16 products run only where bf16 is native")
def test_prompts_of_every_length_leave_no_memory_behind() -> None:
    # A server reads prompts of every length; what their long passes leave must not pile up
    # (oneDNN keeps compiled code for every bf16 product shape it meets: 0.6 MB each). Where
    # our kernel runs it takes every length instead; elsewhere bf16 products do.
    result = subprocess.run(
        [sys.executable, "-c", LENGTHS_CHECK], capture_output=True, text=True, check=True
    )
    assert float(result.stdout) < 40, f"{float(result.stdout):.0f} MiB kept by 320 lengths"


def test_a_model_keeps_its_vocabulary_projection_and_parameter_count(tiny_phi3_dir: Path) -> None:
    fp32 = ModelEngine.load(folder_source(tiny_phi3_dir, weights=True))
    int4 = ModelEngine.load(folder_source(tiny_phi3_dir, weights=True), weights="int4")
    int4_head, fp32_head = int4.model.get_submodule("lm_head"), fp32.model.get_submodule("lm_head")
    decoder = int4.model.get_submodule("model.layers")
    # Every projection in the decoder layers is int4; the vocabulary projection keeps its
    # full weight (fp32 here) and is screened in 4 bits.
    assert [layer for layer in decoder.modules() if isinstance(layer, nn.Linear)] == []
    assert isinstance(int4_head, ScreenedProjection) and isinstance(fp32_head, nn.Linear)
    assert torch.equal(int4_head.weight, fp32_head.weight)
    assert count_parameters(int4.model) == count_parameters(fp32.model)
    report = int4.architecture()
    assert report.total_parameters == fp32.architecture().total_parameters
    assert "(qkv_proj): Int4Linear(in_features=64, out_features=192" in report.repr
    assert "(lm_head): ScreenedProjection(in_features=64, out_features=32064" in report.repr
    assert report.config.dtype.startswith("int4")
    prompt = int4.tokenizer.encode_prompt("The capital of France is")
    assert len(int4.generate(prompt, max_new_tokens=5).token_ids) >= 1


def tiny_bf16_phi3(
    tie_word_embeddings: bool, vocab_size: int = TINY_PHI3["vocab_size"]
) -> PreTrainedModel:
    """A tiny Phi-3 in bf16, as Phi-3-mini's checkpoint has its weights."""
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    config = Phi3Config(
        **{**TINY_PHI3, "tie_word_embeddings": tie_word_embeddings, "vocab_size": vocab_size}
    )
    model = Phi3ForCausalLM(config)
    nn.Module.to(model, torch.bfloat16)
    nn.Module.eval(model)
    return model


def embeddings(model: PreTrainedModel) -> tuple[nn.Embedding, nn.Module]:
    """The input embedding and the vocabulary projection of a transformers model."""
    embedding = model.get_input_embeddings()
    projection = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    assert isinstance(embedding, nn.Embedding) and projection is not None
    return embedding, projection


@pytest.mark.parametrize("tie_word_embeddings", [False, True])
def test_bf16_vocabulary_tables_stay_bf16_and_give_the_same_logits(
    tie_word_embeddings: bool,
) -> None:
    model = tiny_bf16_phi3(tie_word_embeddings=tie_word_embeddings)
    widened = copy.deepcopy(model)
    for table in embeddings(widened):
        table.float()  # the reference: every weight in fp32
    quantize_to_int4(model)
    quantize_to_int4(widened)
    # Half the memory of fp32 copies (Phi-3-mini: 394 MB instead of 788 MB), no cast to load.
    assert {table.weight.dtype for table in embeddings(model)} == {torch.bfloat16}
    assert {table.weight.dtype for table in embeddings(widened)} == {torch.float32}
    # A prompt (every score exact), a short pass (screened) and one token (screened).
    prompt = torch.randint(0, TINY_PHI3["vocab_size"], (1, MAX_SCREENED_ROWS + 4))
    with torch.inference_mode():
        for length in (MAX_SCREENED_ROWS + 4, 6, 1):
            logits = model(input_ids=prompt[:, :length]).logits
            assert logits.dtype == torch.float32
            assert torch.equal(logits, widened(input_ids=prompt[:, :length]).logits)
    dtype = describe_model(model, model.config, name="tiny", weights_loaded=True).config.dtype
    assert dtype == (
        "int4 linear layers (groups of 32), bfloat16 input embeddings and vocabulary projection, "
        "float32 elsewhere"
    )


def test_a_tied_bf16_weight_is_fp32_when_the_projection_is_not_screened() -> None:
    # An odd vocabulary: the packed kernel cannot take it, so the projection stays fp32.
    model = tiny_bf16_phi3(tie_word_embeddings=True, vocab_size=TINY_PHI3["vocab_size"] - 1)
    quantize_to_int4(model)
    embedding, projection = embeddings(model)
    assert isinstance(projection, nn.Linear)
    assert embedding.weight is projection.weight
    assert embedding.weight.dtype == torch.float32


def test_layers_the_kernel_cannot_take_are_left_as_they_are() -> None:
    # Inputs not in whole groups of 32; outputs even but not in torch's packed blocks of 16.
    model = nn.Sequential(nn.Linear(40, 8), nn.Linear(8, 64), nn.Linear(64, 1000))
    assert quantize_to_int4(model) == 0
    assert all(isinstance(layer, nn.Linear) for layer in model)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_model_with_layers_of_rows_the_kernel_cannot_pack_loads_in_int4_and_answers(
    dtype: torch.dtype, tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # A fine-tune's vocabulary with 2 added tokens (32,066 rows: room for the Phi-3 tokenizer's
    # 32,064 ids, as 32,002 is for the original's 32,000), and gate_up_proj's 200 rows: even,
    # not multiples of 16. Those layers stay as they are; the rest is int4, made then cached.
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    config = Phi3Config(**{**TINY_PHI3, "vocab_size": 32066, "intermediate_size": 100})
    model = Phi3ForCausalLM(config)
    nn.Module.to(model, dtype)
    model.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tiny_phi3_dir / name, tmp_path / name)
    answers = []
    for _ in range(2):  # made, then read from the cache
        engine = ModelEngine.load(folder_source(tmp_path, weights=True), weights="int4")
        layer = engine.model.get_submodule("model.layers.0").get_submodule
        assert type(layer("mlp.gate_up_proj")) is nn.Linear
        assert type(layer("mlp.down_proj")) is nn.Linear  # 100 inputs: not whole groups
        assert isinstance(layer("self_attn.qkv_proj"), Int4Linear)
        assert type(engine.model.get_submodule("lm_head")) is nn.Linear
        prompt = engine.tokenizer.encode_prompt("The capital of France is")
        answers.append(engine.generate(prompt, max_new_tokens=5).token_ids)
    assert len(answers[0]) >= 1
    assert answers[1] == answers[0]


@pytest.mark.slow
class TestSmolLM2InInt4:
    """SmolLM2's published weights are 4-bit (Q4_1): int4 should keep what fp32 answers."""

    def test_the_notebook_prompt_still_gets_paris(
        self, smollm2_int4_engine: ModelEngine, smollm2_engine: ModelEngine
    ) -> None:
        prompt = smollm2_int4_engine.tokenizer.encode_prompt("The capital of France is")
        fp32_text = smollm2_engine.generate(prompt, max_new_tokens=8).text
        int4_text = smollm2_int4_engine.generate(prompt, max_new_tokens=8).text
        assert fp32_text.startswith(" Paris.\n")
        assert int4_text.split("\n")[0] == fp32_text.split("\n")[0]

    def test_it_predicts_the_fp32_tokens_of_real_code(
        self, smollm2_int4_engine: ModelEngine, smollm2_engine: ModelEngine
    ) -> None:
        source = Path(textwrap.__file__).read_text(encoding="utf-8")
        start = source.index("class TextWrapper")
        prompt = smollm2_int4_engine.tokenizer.encode_prompt(source[start : start + 1500])
        reference = list(smollm2_engine.generate(prompt, max_new_tokens=40).token_ids)
        with torch.inference_mode():
            logits = smollm2_int4_engine.model(input_ids=torch.tensor([prompt + reference])).logits[
                0
            ]
        # Fed fp32's tokens, int4's most likely next token is fp32's at nearly every step.
        predicted = logits[len(prompt) - 1 : -1].argmax(dim=-1).tolist()
        matches = sum(p == r for p, r in zip(predicted, reference, strict=True))
        assert matches >= 0.95 * len(reference)
