"""End-to-end fixtures: real servers, started once per module where tests can share them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from e2e.lsp_session import (
    SMOLLM2_SETTINGS,
    Phi3Client,
    start,
    start_smollm2,
    stop,
    vscode_capabilities,
)
from phi3_lsp.offline_pack import ensure_asset


@pytest.fixture(scope="session")
def offline_pack() -> None:
    """Build the offline pack before any server needs it (once per cache)."""
    ensure_asset("phi3-mini")
    ensure_asset("smollm2-135m")


@pytest.fixture(scope="session")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-home")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def smollm2(offline_pack: None, hf_home: Path) -> AsyncIterator[Phi3Client]:
    """One SmolLM2 server shared by a module's tests, ready to complete (short, whole answers)."""
    client = await start_smollm2(hf_home, SMOLLM2_SETTINGS)
    yield client
    await stop(client)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def phi3_no_weights(offline_pack: None, hf_home: Path) -> AsyncIterator[Phi3Client]:
    """The default model, offline with an empty hub cache: Phi-3's tokenizer and config only."""
    client = await start(None, hf_home, vscode_capabilities())
    await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    yield client
    await stop(client)
