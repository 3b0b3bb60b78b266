"""A hub model the server downloads: its tokenizer serves hovers before its weights have come,
and weights it cannot get leave hovers working and a status that says why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lsprotocol import types

from e2e.lsp_session import (
    LOAD_TIMEOUT,
    Phi3Client,
    hover_text,
    start,
    stop,
    vscode_capabilities,
)
from hub_cache import NO_WEIGHTS, place_in_hub_cache
from local_hub import local_hub, unreachable_endpoint

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

REPO = "phi3-lsp-tests/tiny-phi3"
PROMPT = "The capital of France is"
FRANCE_ROW = "| `␣France` | `▁France` | 3444 |"


async def france_hover(client: Phi3Client) -> str:
    uri = client.open_text("capital.txt", PROMPT)
    return hover_text(await client.hover_at(uri, 0, PROMPT.index("France")))


async def test_hovers_work_while_the_weights_download(tiny_phi3_dir: Path, tmp_path: Path) -> None:
    with local_hub({REPO: tiny_phi3_dir}, hold_weights=True) as hub:
        client = await start(
            REPO, tmp_path / "hf-home", vscode_capabilities(), hub_endpoint=hub.endpoint
        )
        try:
            await asyncio.to_thread(hub.weights_asked.wait, LOAD_TIMEOUT)
            assert FRANCE_ROW in await france_hover(client)
            downloading = await client.wait_for_status(
                lambda status: status["message"] == f"Downloading the weights of {REPO}"
            )
            assert 0 < downloading["percentage"] < 100
            assert client.statuses[-1]["state"] == "loading", "the weights are still held back"
            hub.weights_released.set()
            ended = await client.wait_for_status(
                lambda status: status["state"] in ("ready", "error")
            )
            assert ended["state"] == "ready"
            assert ended["weightsLoaded"] is True
        finally:
            hub.weights_released.set()
            await stop(client)


async def test_weights_the_hub_cannot_give_leave_hovers_and_say_why(
    tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # As a download cut short leaves the cache: the tokenizer and config, and the file list.
    hf_home = tmp_path / "hf-home"
    place_in_hub_cache(hf_home / "hub", REPO, tiny_phi3_dir, only=NO_WEIGHTS, listed=True)
    client = await start(REPO, hf_home, vscode_capabilities(), hub_endpoint=unreachable_endpoint())
    try:
        ended = await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
        assert ended["state"] == "ready"
        assert ended["weightsLoaded"] is False
        assert ended["message"].startswith(
            f"{REPO} has no weights on this machine (the Hugging Face hub cannot be reached, "
            "and its weights are not in its cache): hovers and the architecture work"
        )
        assert f"`hf download {REPO}`" in ended["message"]
        warnings = [m.message for m in client.messages if m.type == types.MessageType.Warning]
        assert warnings == [ended["message"]]
        assert FRANCE_ROW in await france_hover(client)
    finally:
        await stop(client)
