"""A .gguf model the server converts on first use: its tokenizer serves hovers while its weights
are converted, and the status says which step runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from e2e.lsp_session import hover_text, start, stop, vscode_capabilities

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMPT = "The capital of France is"
CAPITAL_ROW = "| `␣capital` | `Ġcapital` | 3575 |"


async def test_hovers_work_while_a_gguf_files_weights_convert(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    # A copy is another file to the cache: converted afresh, as on a user's first start.
    gguf = Path(shutil.copy2(smollm2_dir / "SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path))
    converting = f"Converting {gguf.name} to safetensors (once)"
    client = await start(str(gguf), tmp_path / "hf-home", vscode_capabilities())
    try:
        await client.wait_for_status(lambda status: status["message"] == converting)
        uri = client.open_text("capital.txt", PROMPT)
        hover = hover_text(await client.hover_at(uri, 0, PROMPT.index("capital")))
        assert CAPITAL_ROW in hover
        # SmolLM2's conversion takes seconds, a hover milliseconds: it was answered meanwhile.
        assert client.statuses[-1]["message"] == converting
        ended = await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
        assert ended["state"] == "ready" and ended["weightsLoaded"] is True
        messages = [status["message"] for status in client.statuses]
        reading = f"Reading the tokenizer and config of {gguf.name}"
        assert messages.index(reading) < messages.index(converting)
    finally:
        await stop(client)
