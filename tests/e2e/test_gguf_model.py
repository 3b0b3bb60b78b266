"""A .gguf model the server converts on first use: its tokenizer serves hovers while its weights
are converted, and the status says which step runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from e2e.lsp_session import Phi3Client, hover_text, start, stop, vscode_capabilities
from phi3_lsp.paths import cache_dir

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMPT = "The capital of France is"
CAPITAL_ROW = "| `␣capital` | `Ġcapital` | 3575 |"


async def start_converting(smollm2_dir: Path, tmp_path: Path) -> tuple[Phi3Client, str]:
    """A server started on a copy of SmolLM2's GGUF, once it says it converts it; that status."""
    # A copy is another file to the cache: converted afresh, as on a user's first start.
    gguf = Path(shutil.copy2(smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path))
    message = f"Converting {gguf.name} to safetensors (once)"
    client = await start(str(gguf), tmp_path / "hf-home", vscode_capabilities())
    await client.wait_for_status(lambda status: status["message"] == message)
    return client, message


async def test_hovers_work_while_a_gguf_files_weights_convert(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    client, converting = await start_converting(smollm2_dir, tmp_path)
    try:
        uri = client.open_text("capital.txt", PROMPT)
        hover = hover_text(await client.hover_at(uri, 0, PROMPT.index("capital")))
        assert CAPITAL_ROW in hover
        # SmolLM2's conversion takes seconds, a hover milliseconds: it was answered meanwhile.
        assert client.statuses[-1]["message"] == converting
        ended = await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
        assert ended["state"] == "ready" and ended["weightsLoaded"] is True
        messages = [status["message"] for status in client.statuses]
        reading = "Reading the tokenizer and config of SmolLM2-135M-Instruct.Q4_1.gguf"
        assert messages.index(reading) < messages.index(converting)
    finally:
        await stop(client)


async def test_a_conversion_stopped_by_the_servers_exit_leaves_nothing_in_the_cache(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    # Its staging folder holds up to 15 GB (a Phi-3-mini GGUF): the exit lets the conversion
    # see its stop and delete it, rather than leave it to a later load's sweep.
    client, _ = await start_converting(smollm2_dir, tmp_path)
    server = client._server
    assert server is not None
    await stop(client)
    assert await server.wait() == 0
    assert list((cache_dir() / "gguf").glob(f".*.staging-{server.pid}")) == []
