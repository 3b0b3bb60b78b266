"""A hub model the server downloads: its tokenizer serves hovers before its weights have come,
weights it cannot get leave hovers working and a status that says why, and a download never
holds up another model or the server's exit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from e2e.lsp_session import (
    LOAD_TIMEOUT,
    SMOLLM2_SETTINGS,
    Phi3Client,
    hover_text,
    start,
    stop,
    vscode_capabilities,
)
from hub_cache import NO_WEIGHTS, WEIGHTS, place_in_hub_cache
from local_hub import LocalHub, local_hub, unreachable_endpoint

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

REPO = "phi3-lsp-tests/tiny-phi3"
PROMPT = "The capital of France is"
FRANCE_ROW = "| `␣France` | `▁France` | 3444 |"
SWITCH_TIMEOUT = 180.0
"""Seconds SmolLM2 may take to load from the cache on a busy machine (a few on a quiet one),
far less than the held download, which lasts as long as the test holds it."""
EXIT_TIMEOUT = 30.0
ANSWER_WHILE_HELD = 60.0
"""Seconds the architecture may take while the weights are held (torch's import, ~4 s here)."""


async def france_hover(client: Phi3Client) -> str:
    uri = client.open_text("capital.txt", PROMPT)
    return hover_text(await client.hover_at(uri, 0, PROMPT.index("France")))


@asynccontextmanager
async def held_download(
    tiny_phi3_dir: Path, tmp_path: Path
) -> AsyncIterator[tuple[LocalHub, Phi3Client]]:
    """A server loading the tiny Phi-3 from a local hub that holds back the end of its weights;
    after the test, the weights are released and the server stopped, unless the test did."""
    with local_hub({REPO: tiny_phi3_dir}, hold_weights=True) as hub:
        client = await start(
            REPO, tmp_path / "hf-home", vscode_capabilities(), hub_endpoint=hub.endpoint
        )
        try:
            yield hub, client
        finally:
            hub.weights_released.set()
            if not client.stopped:
                await stop(client)


async def test_hovers_work_while_the_weights_download(tiny_phi3_dir: Path, tmp_path: Path) -> None:
    async with held_download(tiny_phi3_dir, tmp_path) as (hub, client):
        await asyncio.to_thread(hub.weights_asked.wait, LOAD_TIMEOUT)
        assert FRANCE_ROW in await france_hover(client)
        downloading = await client.wait_for_status(
            lambda status: status["message"] == f"Downloading the weights of {REPO}"
        )
        assert 0 < downloading["percentage"] < 100
        assert client.statuses[-1]["state"] == "loading", "the weights are still held back"
        hub.weights_released.set()
        ended = await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
        assert ended["state"] == "ready"
        assert ended["weightsLoaded"] is True


async def test_the_architecture_shows_while_the_weights_download(
    tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # A learner's first "Show architecture" comes during Phi-3-mini's download (minutes).
    async with held_download(tiny_phi3_dir, tmp_path) as (hub, client):
        await asyncio.to_thread(hub.weights_asked.wait, LOAD_TIMEOUT)
        before = await asyncio.wait_for(client.command("phi3.showArchitecture"), ANSWER_WHILE_HELD)
        assert client.statuses[-1]["state"] == "loading", "the weights are still held back"
        assert (before["weightsLoaded"], before["weightsPending"]) == (False, True)
        hub.weights_released.set()
        ended = await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
        assert ended["state"] == "ready"
        loaded = await client.command("phi3.showArchitecture")
        assert (loaded["weightsLoaded"], loaded["weightsPending"]) == (True, False)
        unchanged = ["model", "className", "repr", "config", "parameters"]
        assert {key: before[key] for key in unchanged} == {key: loaded[key] for key in unchanged}


async def test_the_architecture_asked_just_before_another_model_is_chosen_is_the_new_ones(
    offline_pack: None, tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    # Asked first, its answer is built while torch is still being imported (seconds): the
    # model chosen meanwhile is the one whose architecture the user will read.
    async with held_download(tiny_phi3_dir, tmp_path) as (hub, client):
        await asyncio.to_thread(hub.weights_asked.wait, LOAD_TIMEOUT)
        asked = asyncio.ensure_future(client.command("phi3.showArchitecture"))
        await client.change_settings({**SMOLLM2_SETTINGS, "model": "smollm2-135m"})
        report = await asyncio.wait_for(asked, SWITCH_TIMEOUT)
        assert report["model"] == "smollm2-135m"
        assert report["config"]["hiddenSize"] == 576


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


def mentions(report: Any, text: str) -> bool:
    return text in str(getattr(report, "message", None)) or text in str(
        getattr(report, "title", None)
    )


async def test_a_model_chosen_during_a_download_loads_without_waiting_for_it(
    offline_pack: None, tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    async with held_download(tiny_phi3_dir, tmp_path) as (hub, client):
        # Its first 10 MiB have come: the download waits for the held end of the file.
        await client.wait_for_status(
            lambda status: status["message"] == f"Downloading the weights of {REPO}"
        )
        seen = len(client.statuses)
        # What the status's hint suggests to a user tired of waiting.
        await client.change_settings({**SMOLLM2_SETTINGS, "model": "smollm2-135m"})
        ready = await asyncio.wait_for(
            client.wait_for_status(
                lambda status: (
                    status["model"] == "smollm2-135m" and status["state"] in ("ready", "error")
                ),
                after=seen,
            ),
            SWITCH_TIMEOUT,
        )
        assert ready["state"] == "ready" and ready["weightsLoaded"] is True
        uri = client.open_text("capital.txt", PROMPT)
        [item] = await client.inline(uri, 0, len(PROMPT))
        assert str(item.insert_text).startswith(" Paris")
        assert hub.sent_matching(WEIGHTS) == [], "the old model's weights are still held"

        # Once the new load has begun, nothing speaks of the old download any more.
        switched = next(
            index
            for index, status in enumerate(client.statuses)
            if status["model"] == "smollm2-135m"
        )
        assert all(REPO not in str(status) for status in client.statuses[switched:])
        new_loads = [
            reports
            for reports in client.progress_reports.values()
            if mentions(reports[0], "smollm2-135m")
        ]
        assert new_loads, "the new load shows its progress"
        assert not any(mentions(report, REPO) for reports in new_loads for report in reports)
        # The old download is still held: the server exits all the same.
        await asyncio.wait_for(stop(client), EXIT_TIMEOUT)


async def test_the_server_exits_at_once_during_a_download(
    tiny_phi3_dir: Path, tmp_path: Path
) -> None:
    async with held_download(tiny_phi3_dir, tmp_path) as (hub, client):
        await asyncio.to_thread(hub.weights_asked.wait, LOAD_TIMEOUT)
        await asyncio.wait_for(stop(client), EXIT_TIMEOUT)
