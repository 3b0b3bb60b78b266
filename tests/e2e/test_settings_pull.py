"""Requests sent after a settings change are answered under the settings it brings, also while
the server still pulls them from a client that answers `workspace/configuration` late.

Completions wait for the pull; so do hovers and the commands: asked right after a switch of
model, none of them answers for the model that was in force before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from e2e.lsp_session import Phi3Client, hover_text, start, stop, vscode_capabilities

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TEXT = "The capital of France is Paris."
PULL_ANSWERED_AFTER_SECONDS = 1.5
NEW_MODEL = "smollm2-135m"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tiny(offline_pack: None, hf_home: Path, tiny_phi3_dir: Path) -> AsyncIterator[Phi3Client]:
    """A server with the tiny Phi-3 loaded (Phi-3's tokenizer, 2 layers)."""
    client = await start(str(tiny_phi3_dir), hf_home, vscode_capabilities(), {})
    ready = await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    assert ready["state"] == "ready"
    yield client
    await stop(client)


async def test_hovers_and_commands_asked_during_a_late_pull_answer_for_the_new_model(
    tiny: Phi3Client, tiny_phi3_dir: Path
) -> None:
    uri = tiny.open_text("capital.txt", TEXT)
    tiny_hover = hover_text(await tiny.hover_at(uri, 0, 6))
    tiny_reads = await tiny.command("phi3.measureWeightReads")
    assert "capital" in tiny_hover

    async def late() -> None:
        await asyncio.sleep(PULL_ANSWERED_AFTER_SECONDS)

    tiny.pull_answers.append(late)
    tiny.announce_settings({"model": NEW_MODEL})  # asked at once, not after the pull
    hover, architecture, reads, status = await asyncio.gather(
        tiny.hover_at(uri, 0, 6),
        tiny.command("phi3.showArchitecture"),
        tiny.command("phi3.measureWeightReads"),
        tiny.command("phi3.status"),
    )

    await tiny.wait_for_status(
        lambda status: status["model"] == NEW_MODEL and status["state"] in ("ready", "error")
    )
    new_hover = hover_text(await tiny.hover_at(uri, 0, 6))
    assert new_hover != tiny_hover
    # Before the new tokenizer is read there is no hover: never the tiny Phi-3's tokens.
    assert hover_text(hover) in ("", new_hover)
    assert architecture["model"] == NEW_MODEL
    assert architecture["className"] == "LlamaForCausalLM"
    assert status["model"] == NEW_MODEL
    assert reads["bytesRead"] != tiny_reads["bytesRead"]
    assert reads["bytesRead"] == (await tiny.command("phi3.measureWeightReads"))["bytesRead"]
