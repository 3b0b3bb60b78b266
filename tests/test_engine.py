"""Loading models into the engine: weights or not, threads, dtype, progress, limits."""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from model_sources import folder_source
from phi3_lsp import memory_fit
from phi3_lsp.cpu_kernels import own_fp32_kernel
from phi3_lsp.engine import (
    ModelEngine,
    WeightsNotAvailableError,
    architecture_before_weights,
)
from phi3_lsp.errors import ModelSourceError
from phi3_lsp.model_host import load_error_message
from phi3_lsp.progress import ProgressUpdate
from phi3_lsp.scheduling import physical_cores
from phi3_lsp.settings import WeightFormat

CAPITAL = "The capital of France is"


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_phi3_dir: Path) -> ModelEngine:
    return ModelEngine.load(folder_source(tiny_phi3_dir, weights=True))


def test_a_model_with_weights_is_ready_to_generate(tiny: ModelEngine) -> None:
    assert tiny.has_weights
    assert {parameter.device.type for parameter in tiny.model.parameters()} == {"cpu"}
    assert {parameter.dtype for parameter in tiny.model.parameters()} == {torch.float32}
    assert not tiny.model.training


def test_the_context_length_is_the_models(tiny: ModelEngine) -> None:
    assert tiny.context_length == 4096


def test_end_tokens_come_from_the_tokenizer_and_generation_config(tiny: ModelEngine) -> None:
    # <|endoftext|> (tokenizer and config), <|assistant|> and <|end|> (generation_config.json)
    assert {32000, 32001, 32007} <= tiny.eos_token_ids


def test_generation_works_end_to_end(tiny: ModelEngine) -> None:
    prompt = tiny.tokenizer.encode_prompt(CAPITAL)
    generation = tiny.generate(prompt, max_new_tokens=8)
    assert 1 <= len(generation.token_ids) <= 8
    assert generation.text == tiny.tokenizer.decode_continuation(prompt, generation.token_ids)
    assert generation.prompt_tokens == len(prompt)


def test_prompts_are_kept_for_reuse_only_while_memory_allows(
    tiny: ModelEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = tiny.tokenizer.encode_prompt(CAPITAL)
    tiny.generate(prompt, max_new_tokens=2, cache_key="roomy")
    assert tiny.generate(prompt, max_new_tokens=2, cache_key="roomy").reused_prompt_tokens > 0
    monkeypatch.setattr(memory_fit, "available_memory", lambda: 100 << 20)
    # The document being edited keeps its prompt; reading another's drops it.
    assert tiny.generate(prompt, max_new_tokens=2, cache_key="roomy").reused_prompt_tokens > 0
    tiny.generate(prompt, max_new_tokens=2, cache_key="other")
    assert tiny.generate(prompt, max_new_tokens=2, cache_key="other").reused_prompt_tokens > 0
    assert tiny.generate(prompt, max_new_tokens=2, cache_key="roomy").reused_prompt_tokens == 0


def test_without_weights_nothing_is_allocated_and_generate_explains(phi3_mini_dir: Path) -> None:
    hint = 'Download the weights, or set phi3.model to "smollm2-135m".'
    engine = ModelEngine.load(folder_source(phi3_mini_dir, weights=False, hint=hint))
    assert not engine.has_weights
    assert {parameter.device.type for parameter in engine.model.parameters()} == {"meta"}
    with pytest.raises(WeightsNotAvailableError) as raised:
        engine.generate(engine.tokenizer.encode_prompt(CAPITAL))
    assert str(raised.value) == hint


def test_without_a_hint_the_error_still_names_the_model(phi3_mini_dir: Path) -> None:
    engine = ModelEngine.load(folder_source(phi3_mini_dir, weights=False))
    with pytest.raises(WeightsNotAvailableError, match=r"phi3-mini.*without weights"):
        engine.generate([1, 450])


@pytest.mark.parametrize("weights", ["fp32", "int4"])
@pytest.mark.parametrize("mismatch", ["renamed tensors", "a layer more in the config"])
def test_weights_that_are_not_the_configs_model_fail_to_load(
    tiny_phi3_dir: Path, tmp_path: Path, mismatch: str, weights: WeightFormat
) -> None:
    # transformers leaves what the files lack random, and loads: the model answered noise.
    folder = Path(shutil.copytree(tiny_phi3_dir, tmp_path / "mismatched"))
    if mismatch == "renamed tensors":  # as some adapter exports name them
        tensors = load_file(folder / "model.safetensors")
        save_file(
            {f"base_model.{name}": t for name, t in tensors.items()}, folder / "model.safetensors"
        )
    else:
        config = json.loads((folder / "config.json").read_text())
        config["num_hidden_layers"] += 1
        (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSourceError, match=r"are not .*tensors are not there") as refused:
        ModelEngine.load(folder_source(folder, weights=True), weights=weights)
    assert "config.json belongs to these weights" in str(refused.value)


def test_weights_of_other_shapes_than_the_configs_are_named(
    tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(tiny_phi3_dir, tmp_path / "wider"))
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] *= 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSourceError, match=r"do not fit .*config\.json: \d+ tensors"):
        ModelEngine.load(folder_source(folder, weights=True))


@pytest.mark.parametrize("weights", ["fp32", "int4"])
@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        ("cut short", r"model\.safetensors is cut short \([\d,]+ of the [\d,]+ bytes its header"),
        ("cut within its header", r"model\.safetensors is cut short \(100 of the [\d,]+ bytes"),
        ("an index that is not JSON", r"model\.safetensors\.index\.json cannot be read \(JSON"),
        ("an index of another file", r"\.index\.json puts weights in model-00002-of-00002"),
        ("a Git LFS pointer", r"model\.safetensors is not a safetensors file \(a Git LFS"),
    ],
)
def test_weight_files_that_cannot_load_whole_are_named_with_the_fix(
    tiny_phi3_dir: Path, tmp_path: Path, breakage: str, named: str, weights: WeightFormat
) -> None:
    folder = Path(shutil.copytree(tiny_phi3_dir, tmp_path / "broken"))
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if breakage == "cut short":  # as a copy or a download that stopped
        single.write_bytes(single.read_bytes()[:100_000])
    elif breakage == "cut within its header":
        single.write_bytes(single.read_bytes()[:100])
    elif breakage == "an index that is not JSON":
        single.rename(folder / "model-00001-of-00001.safetensors")
        index.write_text("{")
    elif breakage == "a Git LFS pointer":  # as `git clone` leaves it without git-lfs
        single.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n")
    else:  # a checkpoint in two files, the second missing
        shards = [f"model-0000{part}-of-00002.safetensors" for part in (1, 2)]
        weight_map = {name: shards[i % 2] for i, name in enumerate(load_file(single))}
        single.rename(folder / shards[0])
        index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(ModelSourceError, match=named) as refused:
        ModelEngine.load(folder_source(folder, weights=True), weights=weights)
    assert f"{folder}/" in str(refused.value)
    assert "copy or download" in str(refused.value)


def test_weights_under_a_name_transformers_does_not_load_are_named_with_the_fix(
    tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(tiny_phi3_dir, tmp_path / "renamed"))
    (folder / "model.safetensors").rename(folder / "tiny-phi3.safetensors")
    with pytest.raises(ModelSourceError, match=r"has tiny-phi3\.safetensors but no model\.safe"):
        ModelEngine.load(folder_source(folder, weights=True))


@pytest.mark.parametrize("sharded", [False, True])
def test_weights_linked_to_a_file_that_is_gone_are_named_as_such(
    tiny_phi3_dir: Path, tmp_path: Path, sharded: bool
) -> None:
    # As a snapshot of the hub's cache copied without following its links, or a deleted blob.
    folder = Path(shutil.copytree(tiny_phi3_dir, tmp_path / "linked"))
    single = folder / "model.safetensors"
    linked = single
    if sharded:
        linked = folder / "model-00001-of-00001.safetensors"
        weight_map = dict.fromkeys(load_file(single), linked.name)
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    single.unlink()
    linked.symlink_to("../../blobs/0a1b2c")
    with pytest.raises(
        ModelSourceError, match=rf"{linked.name} is a link to \.\./\.\./blobs/0a1b2c, which is gone"
    ):
        ModelEngine.load(folder_source(folder, weights=True))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("not JSON", r"config\.json cannot be read \(JSONDecodeError: "),
        ("not an object", r"config\.json is a JSON list, not the object of a model's config"),
        ("an unknown model type", r"config\.json has model type `nosucharch`, which transformers"),
        ("code of its own", r"runs code of its own .* set phi3\.trustRemoteCode to true if you"),
    ],
)
def test_a_config_that_transformers_cannot_read_is_named_with_the_fix(
    tiny_phi3_dir: Path, tmp_path: Path, change: str, named: str
) -> None:
    folder = Path(shutil.copytree(tiny_phi3_dir, tmp_path / "config"))
    config = json.loads((folder / "config.json").read_text())
    if change == "not JSON":
        (folder / "config.json").write_text("{'model_type': 'phi3'}")
    elif change == "not an object":
        (folder / "config.json").write_text("[1]")
    else:
        config["model_type"] = "nosucharch"
        if change == "code of its own":  # as a hub model that needs trustRemoteCode
            config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
        (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSourceError, match=named):
        ModelEngine.load(folder_source(folder, weights=True))
    with pytest.raises(ModelSourceError, match=named):  # the architecture's preview too
        architecture_before_weights(folder_source(folder, weights=True))


@pytest.mark.parametrize("content", [b"{'eos_token_id': 2}", b"[1]", b"\xe9"])
def test_a_generation_config_that_cannot_be_read_is_named(
    tiny_phi3_dir: Path, tmp_path: Path, content: bytes
) -> None:
    folder = Path(shutil.copytree(tiny_phi3_dir, tmp_path / "bad-generation-config"))
    (folder / "generation_config.json").write_bytes(content)
    with pytest.raises(ModelSourceError, match=r"generation_config\.json cannot be read"):
        ModelEngine.load(folder_source(folder, weights=True))


def test_tokenizer_and_hover_data_work_without_weights(phi3_mini_dir: Path) -> None:
    engine = ModelEngine.load(folder_source(phi3_mini_dir, weights=False))
    assert [span.id for span in engine.tokenizer.token_spans(CAPITAL)] == [
        450,
        7483,
        310,
        3444,
        338,
    ]


def test_a_prompt_longer_than_the_context_is_refused(tiny: ModelEngine) -> None:
    with pytest.raises(ValueError, match="context length of 4096"):
        tiny.generate([450] * 4090, max_new_tokens=50)


def test_an_empty_prompt_is_refused(tiny: ModelEngine) -> None:
    with pytest.raises(ValueError, match="empty"):
        tiny.generate([], max_new_tokens=5)


def test_threads_are_set_as_asked(tiny_phi3_dir: Path, restore_threads: None) -> None:
    ModelEngine.load(folder_source(tiny_phi3_dir, weights=True), threads=1)
    assert torch.get_num_threads() == 1
    ModelEngine.load(folder_source(tiny_phi3_dir, weights=True), threads=0)
    assert torch.get_num_threads() == physical_cores()


def test_a_thread_count_change_keeps_the_weights_and_the_text(
    tiny_phi3_dir: Path, restore_threads: None
) -> None:
    engine = ModelEngine.load(folder_source(tiny_phi3_dir, weights=True), threads=1)
    prompt = engine.tokenizer.encode_prompt("def add(a, b):")
    on_one = engine.generate(prompt, max_new_tokens=8, cache_key="doc")
    weights = [parameter.data_ptr() for parameter in engine.model.parameters()]
    engine.use_threads(2)
    assert torch.get_num_threads() == 2
    assert max(engine.pass_planner.thread_counts) == 2
    on_two = engine.generate(prompt, max_new_tokens=8, cache_key="doc")
    assert [parameter.data_ptr() for parameter in engine.model.parameters()] == weights
    assert on_two.token_ids == on_one.token_ids
    # Keys and values of a prompt read on 1 thread would not be those 2 threads compute.
    assert on_two.reused_prompt_tokens == 0
    engine.use_threads(2)  # no change: the prompt just read stays
    assert engine.generate(prompt, max_new_tokens=8, cache_key="doc").reused_prompt_tokens > 0


@pytest.mark.parametrize("weights", ["fp32", "int4"])
def test_a_bf16_checkpoint_runs_in_fp32(weights: WeightFormat, tiny_bf16_phi3_dir: Path) -> None:
    # This class of CPU has no native bf16: whatever the checkpoint, nothing computes in bf16.
    # Weights that widen exactly as they are read stay bf16: int4 reads a few rows of the input
    # embedding and the vocabulary projection for a token; fp32 also reads every linear layer
    # through our kernel, which widens each value as it loads it.
    engine = ModelEngine.load(folder_source(tiny_bf16_phi3_dir, weights=True), weights=weights)
    assert isinstance(engine.model, PreTrainedModel)
    projection = engine.model.get_output_embeddings()  # type: ignore[no-untyped-call]
    tables = [engine.model.get_input_embeddings(), projection]
    held_in_bf16 = [table.weight for table in tables]
    if weights == "fp32":
        linears = [module for module in engine.model.modules() if isinstance(module, nn.Linear)]
        kept = [tables[0].weight, *(linear.weight for linear in linears)]
        held_in_bf16 = kept if own_fp32_kernel() else []
    held = {id(weight) for weight in held_in_bf16}
    others = [p for p in engine.model.parameters() if id(p) not in held]
    assert {parameter.dtype for parameter in others} == {torch.float32}
    assert all(weight.dtype == torch.bfloat16 for weight in held_in_bf16)
    with torch.inference_mode():
        assert tables[0](torch.tensor([[1, 450]])).dtype == torch.float32
        logits = engine.model(input_ids=torch.tensor([[1, 450]])).logits
        assert logits.dtype == torch.float32
    expected = "float32 elsewhere" if held_in_bf16 else "float32"
    assert engine.architecture().config.dtype.endswith(expected)
    if weights == "fp32" and held_in_bf16:
        assert engine.architecture().config.dtype == (
            "bfloat16 linear layers, input embeddings and vocabulary projection, float32 elsewhere"
        )


@pytest.mark.parametrize("weights", ["fp32", "int4"])
def test_cached_prompts_are_budgeted_as_fp32_keys_and_values(
    weights: WeightFormat, tiny_bf16_phi3_dir: Path
) -> None:
    # int4 keeps a bf16 checkpoint's input embedding in bf16; its keys and values are fp32
    # all the same, so a token of them takes 4 bytes a value, not that embedding's 2.
    engine = ModelEngine.load(folder_source(tiny_bf16_phi3_dir, weights=True), weights=weights)
    text = engine.config.get_text_config()
    head_dim = text.hidden_size // text.num_attention_heads
    per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * 4
    # The documented 2 GiB of them.
    assert engine.prompt_cache_tokens == (2 << 30) // per_token


def test_loading_reports_progress_until_ready(tiny_phi3_dir: Path) -> None:
    updates: list[ProgressUpdate] = []
    ModelEngine.load(folder_source(tiny_phi3_dir, weights=True), progress=updates.append)
    assert {update.stage for update in updates} == {"loading"}
    fractions = [update.fraction for update in updates]
    assert fractions == sorted(f for f in fractions if f is not None)
    assert fractions[-1] == 1.0
    assert any("weights" in update.message for update in updates)


@pytest.mark.parametrize("weights", [True, False])
def test_a_tokenizer_with_more_ids_than_the_models_vocabulary_fails_the_load_before_its_weights(
    weights: bool, tiny_phi3_dir: Path, smollm2_dir: Path, tmp_path: Path
) -> None:
    # The tiny Phi-3's 32,064 rows under SmolLM2's tokenizer (49,152 ids): each completion
    # would index past the embedding. (Phi-3's own tokenizer, 32,064 ids at most, loads.)
    for item in tiny_phi3_dir.iterdir():
        shutil.copy2(item, tmp_path / item.name)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(smollm2_dir / name, tmp_path / name)
    updates: list[ProgressUpdate] = []
    with pytest.raises(ModelSourceError) as raised:
        ModelEngine.load(folder_source(tmp_path, weights=weights), progress=updates.append)
    message = load_error_message(str(tmp_path), raised.value)
    assert message.startswith(
        f"{tmp_path}'s tokenizer has ids up to 49151 but the model's vocabulary has 32064 — "
        "the tokenizer belongs to another model"
    )
    # The config's vocab_size tells: the weights are not read first (Phi-3-mini's: seconds).
    assert [update.message for update in updates] == [f"Loading the tokenizer of {tmp_path.name}"]


def _live_modules() -> list[nn.Module]:
    # (type(), not isinstance(): some objects warn when their __class__ is read)
    return [thing for thing in gc.get_objects() if issubclass(type(thing), nn.Module)]


@pytest.mark.parametrize("weights", ["fp32", "int4"])
@pytest.mark.parametrize("folder", ["tiny_phi3_dir", "smollm2_dir"])
def test_a_dropped_model_gives_its_memory_back_at_once(
    folder: str, weights: WeightFormat, request: pytest.FixtureRequest
) -> None:
    # Reference cycles would keep a dropped model's weights until a full garbage collection,
    # which holds the GIL (~0.3 s with a model loaded): a reload or a settings change would
    # stall the editor's requests, or hold two models' memory for a while.
    model_dir: Path = request.getfixturevalue(folder)
    modules_before = {id(module) for module in _live_modules()}
    engine = ModelEngine.load(folder_source(model_dir, weights=True), weights=weights)
    engine.generate(engine.tokenizer.encode_prompt(CAPITAL), max_new_tokens=3, cache_key="doc")
    engine.load_drafter()  # fp32 only, where our 4-bit kernels run
    made = [weakref.ref(m) for m in _live_modules() if id(m) not in modules_before]
    gc.disable()
    try:
        del engine
        assert sum(ref() is not None for ref in made) == 0
    finally:
        gc.enable()


def test_dropped_drafts_give_their_memory_back_at_once(tiny_phi3_dir: Path) -> None:
    engine = ModelEngine.load(folder_source(tiny_phi3_dir, weights=True))
    modules_before = {id(module) for module in _live_modules()}
    if not engine.load_drafter():
        pytest.skip("4-bit drafts need our 4-bit kernels, which this CPU cannot run")
    made = [weakref.ref(m) for m in _live_modules() if id(m) not in modules_before]
    gc.disable()
    try:
        engine.drop_drafter()
        assert made and sum(ref() is not None for ref in made) == 0
    finally:
        gc.enable()
