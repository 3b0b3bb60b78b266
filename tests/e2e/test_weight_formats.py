"""Switching SmolLM2 between fp32 and int4 weights from the settings, without a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from e2e.lsp_session import SMOLLM2_SETTINGS, Phi3Client, start_smollm2, stop
from phi3_lsp.cpu_kernels import own_fp32_kernel, own_kernels

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMPT = "The capital of France is"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(offline_pack: None, hf_home: Path) -> AsyncIterator[Phi3Client]:
    client = await start_smollm2(hf_home, SMOLLM2_SETTINGS)
    yield client
    await stop(client)


async def switch_to(client: Phi3Client, weights: str) -> None:
    seen = len(client.statuses)
    await client.change_settings({**SMOLLM2_SETTINGS, "weights": weights})
    loading = await client.wait_for_status(lambda status: status["state"] == "loading", after=seen)
    assert loading["weights"] == weights  # a client can say which format loads
    ready = await client.wait_for_status(
        lambda status: status["state"] in ("ready", "error"), after=seen
    )
    assert ready["state"] == "ready" and ready["weightsLoaded"] is True
    assert ready["weights"] == weights


async def completion(client: Phi3Client, name: str) -> str:
    uri = client.open_text(name, PROMPT)
    [item] = await client.inline(uri, 0, len(PROMPT))
    assert isinstance(item.insert_text, str)
    return item.insert_text


async def test_int4_weights_load_on_a_settings_change_and_fp32_comes_back(
    session: Phi3Client,
) -> None:
    fp32_text = await completion(session, "fp32.txt")
    fp32_report = await session.command("phi3.showArchitecture")
    assert fp32_report["config"]["dtype"] == "float32"

    await switch_to(session, "int4")
    int4_text = await completion(session, "int4.txt")
    assert int4_text.startswith(" Paris")
    int4_report = await session.command("phi3.showArchitecture")
    assert int4_report["config"]["dtype"].startswith("int4")
    assert "(q_proj): Int4Linear(in_features=576, out_features=576" in int4_report["repr"]
    assert int4_report["parameters"]["total"] == fp32_report["parameters"]["total"]

    await switch_to(session, "fp32")
    assert await completion(session, "fp32-again.txt") == fp32_text


async def test_fp32_takes_its_4bit_drafts_after_ready_and_the_setting_drops_them_unreloaded(
    session: Phi3Client,
) -> None:
    # They load on the model thread right after ready, where our 4-bit kernels run (elsewhere
    # fp32 drafts from the text): a completion runs after them, and its statuses say so.
    drafts_here = own_kernels() is not None and own_fp32_kernel() is not None
    seen = len(session.statuses)
    with_drafts = await completion(session, "with-drafts.txt")
    generating = await session.wait_for_status(
        lambda status: status["state"] == "generating", after=seen
    )
    assert generating["int4Drafts"] is drafts_here
    assert (await session.command("phi3.status"))["int4Drafts"] is drafts_here

    seen = len(session.statuses)
    await session.change_settings({**SMOLLM2_SETTINGS, "int4Drafts": False})
    # The 4-bit copy only drafts: fp32's text is the same without it.
    assert await completion(session, "without-drafts.txt") == with_drafts
    assert (await session.command("phi3.status"))["int4Drafts"] is False
    assert not any(status["int4Drafts"] for status in session.statuses[seen:])
    # The model stays: only its 4-bit copy goes.
    assert not any(status["state"] == "loading" for status in session.statuses[seen:])
    await session.change_settings(SMOLLM2_SETTINGS)
