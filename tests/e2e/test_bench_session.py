"""The benchmark's LSP session against the real server: a start that cannot be measured stops
the run at once, with the server's reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.lsp_session import ServerError, ServerSession
from bench.server_runs import server_command

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

PHI3_MINI = "microsoft/Phi-3-mini-4k-instruct"


async def test_a_server_that_loads_no_weights_stops_the_benchmark_with_its_reason(
    offline_pack: None, hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Offline, Phi-3-mini loads its tokenizer and architecture only: nothing to time.
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    session = await ServerSession.start(
        server_command(PHI3_MINI, tmp_path / "server.log"),
        {"phi3": {"model": PHI3_MINI}},
        tmp_path / "server.stderr",
    )
    try:
        # A start takes seconds; before, the run waited out its 30-minute limit instead.
        with pytest.raises(ServerError, match="microsoft/Phi-3-mini-4k-instruct has no weights"):
            await session.wait_ready(120)
    finally:
        await session.shutdown()
