"""What a user can get wrong: a model that cannot load, bad settings, unknown commands.

The server says what to fix, answers every request with an empty result or a proper error,
and recovers when the model is changed, without a restart.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from conftest import TINY_PHI3
from e2e.lsp_session import ANSWER_TIMEOUT, Phi3Client, hover_text, start, stop, vscode_capabilities

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def broken_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("broken-server") / "server.log"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def broken(offline_pack: None, hf_home: Path, broken_log: Path) -> AsyncIterator[Phi3Client]:
    """A server asked for a model folder that does not exist, with one invalid setting."""
    client = await start(
        str(broken_log.parent / "no-such-model"),
        hf_home,
        vscode_capabilities(),
        settings={"maxNewTokens": "lots"},
        log_file=broken_log,
    )
    await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    yield client
    await stop(client)


async def test_a_model_that_cannot_load_is_an_error_with_the_fix(broken: Phi3Client) -> None:
    status = broken.statuses[-1]
    assert status["state"] == "error"
    assert "no-such-model" in status["message"]
    assert "phi3.model" in status["message"]  # the fix: which setting to change
    errors = [m.message for m in broken.messages if m.type == types.MessageType.Error]
    assert errors == [status["message"]]


async def test_an_invalid_setting_is_reported_and_its_default_kept(broken: Phi3Client) -> None:
    warnings = [m.message for m in broken.messages if m.type == types.MessageType.Warning]
    assert any("phi3.maxNewTokens must be an integer" in message for message in warnings)


@pytest.mark.parametrize(
    "options",
    [{"model": "smollm2-135m", "maxNewTokens": 3}, {"phi3.model": "smollm2-135m"}],
    ids=["by name", "dotted, as in VS Code's settings.json"],
)
async def test_settings_outside_the_phi3_section_are_said_with_the_fix(
    offline_pack: None, hf_home: Path, options: dict[str, object]
) -> None:
    no_pull = types.ClientCapabilities()  # so the settings come only as sent
    client = await start(None, hf_home, no_pull, initialize=False)
    try:
        await client.initialize_session(
            types.InitializeParams(capabilities=no_pull, initialization_options=options)
        )
        await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"contextTokens": 64})
        )
        status = await client.command("phi3.status")
    finally:
        await stop(client)
    # Not read: the default model, not the one they name.
    assert status["model"] == "microsoft/Phi-3-mini-4k-instruct"
    said = [
        m.message
        for m in client.messages
        if m.type == types.MessageType.Warning and m.message.startswith("phi3-lsp settings")
    ]
    # Each names the keys, and how to send them.
    assert len(said) == 2
    assert all(key in said[0] for key in options)
    assert '{"phi3": {"model": …' in said[0]
    assert "contextTokens" in said[1] and '{"phi3": {"contextTokens": …}}' in said[1]


async def test_requests_answer_empty_while_no_model_is_loaded(broken: Phi3Client) -> None:
    uri = broken.open_text("broken.txt", PROMPT)
    assert await broken.inline(uri, 0, len(PROMPT)) == []
    assert await broken.hover_at(uri, 0, 4) is None
    params = types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=0, character=len(PROMPT)),
    )
    answer = await asyncio.wait_for(broken.text_document_completion_async(params), ANSWER_TIMEOUT)
    assert isinstance(answer, types.CompletionList) and list(answer.items) == []
    # One message for the failed load, not one per request.
    assert len([m for m in broken.messages if m.type == types.MessageType.Error]) == 1


@pytest.mark.parametrize("command", ["phi3.showArchitecture", "phi3.measureWeightReads"])
async def test_requests_for_the_model_fail_with_the_reason(
    broken: Phi3Client, command: str, broken_log: Path
) -> None:
    with pytest.raises(JsonRpcException, match="no-such-model") as refused:
        await broken.command(command)
    # The server's log says it in one line, not in a traceback that looks like a crash.
    log = broken_log.read_text(encoding="utf-8")
    assert "Traceback" not in log
    answered = [line for line in log.splitlines() if refused.value.message in line]
    assert answered and all("Request answered with error" in line for line in answered)


async def test_an_unknown_command_is_an_error_and_the_server_keeps_serving(
    broken: Phi3Client,
) -> None:
    with pytest.raises(JsonRpcException, match=r"phi3\.doesNotExist"):
        await broken.command("phi3.doesNotExist")
    with pytest.raises(JsonRpcException):
        await broken.command("phi3.status", "an unexpected argument")
    assert (await broken.command("phi3.status"))["state"] == "error"


async def test_a_change_of_another_setting_does_not_repeat_the_failed_load(
    broken: Phi3Client,
) -> None:
    seen, shown = len(broken.statuses), len(broken.messages)
    await broken.change_settings({"maxNewTokens": 7})
    uri = broken.open_text("unrelated-change.txt", PROMPT)
    assert await broken.inline(uri, 0, len(PROMPT)) == []  # answered once the change is read
    assert [status["state"] for status in broken.statuses[seen:]] == []
    assert broken.messages[shown:] == []


async def test_a_new_model_loads_without_a_restart(broken: Phi3Client) -> None:
    seen = len(broken.statuses)
    await broken.change_settings({"model": "microsoft/Phi-3-mini-4k-instruct"})
    ready = await broken.wait_for_status(
        lambda status: status["state"] in ("ready", "error"), after=seen
    )
    assert ready["state"] == "ready"
    assert ready["model"] == "microsoft/Phi-3-mini-4k-instruct"
    assert broken.statuses[seen]["state"] == "loading"
    uri = broken.open_text("recovered.txt", PROMPT)
    hover = await broken.hover_at(uri, 0, PROMPT.index("France"))
    assert "| 3444 |" in hover_text(hover)
    report = await broken.command("phi3.showArchitecture")
    assert report["className"] == "Phi3ForCausalLM"


async def test_a_tokenizer_file_that_cannot_be_read_is_named_without_a_traceback(
    broken: Phi3Client, tmp_path: Path
) -> None:
    from phi3_lsp.offline_pack import ensure_asset

    folder = tmp_path / "damaged-tokenizer"
    folder.mkdir()
    shutil.copy2(ensure_asset("smollm2-135m") / "config.json", folder)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ', encoding="utf-8")
    seen, logged = len(broken.statuses), len(broken.log_messages)
    await broken.change_settings({"model": str(folder)})
    status = await broken.wait_for_status(
        lambda status: status["state"] in ("ready", "error"), after=seen
    )
    assert status["state"] == "error"
    assert f"{folder / 'tokenizer.json'} cannot be read as a tokenizer file" in status["message"]
    assert "phi3.model" in status["message"]
    assert not [m for m in broken.log_messages[logged:] if "Traceback" in m.message]


async def test_a_config_transformers_cannot_build_is_one_line_without_a_traceback(
    broken: Phi3Client, tmp_path: Path
) -> None:
    from phi3_lsp.offline_pack import ensure_asset

    folder = tmp_path / "unknown-architecture"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (folder / name).symlink_to(ensure_asset("smollm2-135m") / name)
    (folder / "config.json").write_text('{"model_type": "no_such_architecture"}')
    seen, shown, logged = len(broken.statuses), len(broken.messages), len(broken.log_messages)
    await broken.change_settings({"model": str(folder)})
    status = await broken.wait_for_status(
        lambda status: status["state"] in ("ready", "error"), after=seen
    )
    assert status["state"] == "error"
    # transformers' message runs to three lines of advice; the pop-up shows its cause.
    assert "\n" not in status["message"]
    assert "no_such_architecture" in status["message"]
    assert status["message"].endswith('or "smollm2-135m".')
    assert [m.message for m in broken.messages[shown:]] == [status["message"]]
    assert not [m for m in broken.log_messages[logged:] if "Traceback" in m.message]


def write_model_beyond_memory(folder: Path, tokenizer_dir: Path) -> int:
    """A Llama of ~69 billion parameters (~139 GB in bf16, ~277 GB in fp32): its config,
    SmolLM2's tokenizer and a bf16 safetensors file of the right size whose data are holes (a
    sparse file: no disk used). Returns the parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    config.save_pretrained(folder)
    header: dict[str, object] = {}
    offset = 0
    for name, tensor in model.state_dict().items():
        size = tensor.numel() * 2  # bf16
        header[name] = {
            "dtype": "BF16",
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header).encode()
    with (folder / "model.safetensors").open("wb") as file:
        file.write(len(encoded).to_bytes(8, "little") + encoded)
        file.truncate(8 + len(encoded) + offset)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tokenizer_dir / name, folder / name)
    return sum(tensor.numel() for tensor in model.parameters())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def beyond_memory(
    offline_pack: None, hf_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Phi3Client, int]]:
    """A server asked for a model whose weights are larger than this machine's memory."""
    from phi3_lsp.offline_pack import ensure_asset

    folder = tmp_path_factory.mktemp("beyond-memory")
    parameters = write_model_beyond_memory(folder, ensure_asset("smollm2-135m"))
    client = await start(str(folder), hf_home, vscode_capabilities())
    await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    yield client, parameters
    await stop(client)


async def test_a_model_beyond_memory_is_loaded_without_weights_and_says_what_fits(
    beyond_memory: tuple[Phi3Client, int],
) -> None:
    client, _ = beyond_memory
    status = client.statuses[-1]
    assert status["state"] == "ready"
    assert status["weightsLoaded"] is False
    from phi3_lsp.cpu_kernels import own_fp32_kernel

    # Its bf16 weights stay bf16 in fp32 where our kernel runs: ~139 GB, else ~277 GB.
    needs = r"13\d" if own_fp32_kernel() is not None else r"27\d"
    assert re.search(
        rf"in fp32 needs about {needs}\.\d GB of memory and [\d.]+ GB is free", status["message"]
    )
    assert "phi3.model to a smaller model" in status["message"]
    warnings = [m.message for m in client.messages if m.type == types.MessageType.Warning]
    assert warnings == [status["message"]]


async def test_beside_a_model_beyond_memory_the_server_keeps_serving(
    beyond_memory: tuple[Phi3Client, int],
) -> None:
    client, parameters = beyond_memory
    uri = client.open_text("big.txt", PROMPT)
    assert await client.inline(uri, 0, len(PROMPT)) == []
    hover = await client.hover_at(uri, 0, PROMPT.index("France"))
    assert "France" in hover_text(hover)
    report = await client.command("phi3.showArchitecture")
    assert report["className"] == "LlamaForCausalLM"
    assert report["weightsLoaded"] is False
    assert report["parameters"]["total"] == parameters


async def test_a_context_shorter_than_max_new_tokens_gives_a_shorter_answer(
    offline_pack: None, hf_home: Path, tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # A context of 32 tokens and the default maxNewTokens of 50: the prompt may use half of it
    # (and keeps at least 8 of those 16 tokens where it is cut), and the answer fills what the
    # context leaves instead of failing. A prompt of BOS alone would leave room for 31.
    from transformers import Phi3Config, Phi3ForCausalLM

    Phi3ForCausalLM(Phi3Config(**{**TINY_PHI3, "max_position_embeddings": 32})).save_pretrained(
        tmp_path
    )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tiny_phi3_dir / name, tmp_path / name)
    client = await start(str(tmp_path), hf_home, vscode_capabilities())
    try:
        ready = await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
        assert ready["state"] == "ready"
        seen = len(client.statuses)
        text = f"{PROMPT} Paris. " * 8  # more than the 16 tokens the prompt keeps
        uri = client.open_text("short-context.txt", text)
        await client.inline(uri, 0, len(text))  # an answer, not an error
        done = await client.wait_for_status(
            lambda status: status["lastTokens"] is not None, after=seen
        )
        assert 1 <= done["lastTokens"] <= 24
    finally:
        await stop(client)
