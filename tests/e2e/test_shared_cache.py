"""A server that shares its cache with another phi3-lsp process (another editor window's
server, the CLI) working on an entry it needs: it says what it waits for, and waits no longer
than its model is wanted."""

from __future__ import annotations

from pathlib import Path

import pytest
from filelock import FileLock

from e2e.lsp_session import start, stop, vscode_capabilities
from phi3_lsp.paths import CACHE_ENV
from phi3_lsp.sources import resolve_model

pytestmark = pytest.mark.asyncio


async def test_a_server_waiting_for_another_processs_conversion_says_so_and_switches_at_once(
    smollm2_dir: Path, hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two editor windows on one GGUF: the second showed "Finding …" for as long as the first
    # converted it (a Phi-3-mini GGUF: minutes), and another model chosen there waited too.
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))  # the server's too
    gguf = smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    conversion = resolve_model(str(gguf), cache=cache, weights="later").conversion
    assert conversion is not None
    entry, other_model = conversion.entry, str(tmp_path / "another-model")
    entry.parent.mkdir(parents=True)
    waiting = f"Waiting for another phi3-lsp process to convert {gguf.name}"
    with FileLock(str(entry.parent / f".{entry.name}.lock")):  # the other process converts it
        client = await start(str(gguf), hf_home, vscode_capabilities())
        try:
            await client.wait_for_status(lambda status: status["message"] == waiting)
            await client.change_settings({"model": other_model})
            switched = await client.wait_for_status(
                lambda status: status["model"] == other_model and status["state"] == "error"
            )
            assert "does not exist" in switched["message"]
        finally:
            await stop(client)
    assert not entry.exists()
