"""Reading the prompt at a resting cursor (`phi3/readAtCursor`) before a completion asks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types

from e2e.lsp_session import SMOLLM2_SETTINGS, Phi3Client, start_smollm2, stop
from phi3_lsp import generation as generation_module

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# ~1,500 tokens of real source fit: SmolLM2 takes seconds to read them on a CPU of this class.
SETTINGS = {**SMOLLM2_SETTINGS, "contextTokens": 2000}
SOURCE = Path(generation_module.__file__).read_text(encoding="utf-8")
END = (SOURCE.count("\n"), len(SOURCE.split("\n")[-1]))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reader(offline_pack: None, hf_home: Path) -> AsyncIterator[Phi3Client]:
    client = await start_smollm2(hf_home, SETTINGS)
    yield client
    await stop(client)


def readings_since(client: Phi3Client, earlier_tokens: set[int | str]) -> int:
    """How many "Reading the prompt" progresses began after `earlier_tokens` were seen."""
    return sum(
        isinstance(reports[0], types.WorkDoneProgressBegin)
        and reports[0].title == "Reading the prompt"
        for token, reports in client.progress_reports.items()
        if token not in earlier_tokens
    )


async def test_a_completion_after_reading_at_the_cursor_reads_nothing_more_and_is_the_same(
    reader: Phi3Client,
) -> None:
    cold_uri = reader.open_text("cold.py", SOURCE)
    [cold] = await reader.inline(cold_uri, *END)
    uri = reader.open_text("read_ahead.py", SOURCE)
    statuses = len(reader.statuses)
    read = await reader.read_at_cursor(uri, *END)
    assert read["cachedTokens"] == read["readTokens"] == read["promptTokens"] - 1
    assert read["promptTokens"] > 1000
    assert reader.generations_since(statuses) == 0  # reading generates nothing
    # Asked again, the text is already read.
    assert (await reader.read_at_cursor(uri, *END))["readTokens"] == 0
    earlier_tokens = set(reader.progress_reports)
    [warm] = await reader.inline(uri, *END)
    assert readings_since(reader, earlier_tokens) == 0
    assert warm.insert_text == cold.insert_text


async def test_typing_after_reading_at_the_cursor_gives_the_cold_text(reader: Phi3Client) -> None:
    typed = SOURCE + "\n\ndef "
    end = (typed.count("\n"), len("def "))
    cold_uri = reader.open_text("typed-cold.py", typed)
    [cold] = await reader.inline(cold_uri, *end)
    uri = reader.open_text("typed.py", SOURCE)
    assert (await reader.read_at_cursor(uri, *END))["readTokens"] > 1000
    reader.replace_text(uri, typed, version=2)
    [warm] = await reader.inline(uri, *end)
    assert warm.insert_text == cold.insert_text


async def test_nothing_is_read_where_there_is_nothing_to_read(reader: Phi3Client) -> None:
    uri = reader.open_text("short.txt", "The capital of France is")
    assert await reader.read_at_cursor(uri, 0, 0) is None  # no text before the cursor
    assert await reader.read_at_cursor(uri, 5, 0) is None  # past the end
    assert await reader.read_at_cursor("untitled:never-opened.txt", 0, 3) is None
    await reader.change_settings({**SETTINGS, "readAtCursor": False})
    try:
        assert await reader.read_at_cursor(uri, 0, 10) is None
    finally:
        await reader.change_settings(SETTINGS)
    read = await reader.read_at_cursor(uri, 0, 10)
    assert read is not None and read["cachedTokens"] == read["promptTokens"] - 1


async def test_a_malformed_request_is_an_error_and_the_server_keeps_serving(
    reader: Phi3Client,
) -> None:
    with pytest.raises(Exception, match="text document and a position"):
        await reader.protocol.send_request_async(  # type: ignore[no-untyped-call]
            "phi3/readAtCursor", {"position": {"line": 0}}
        )
    uri = reader.open_text("after-error.txt", "The capital of France is")
    [item] = await reader.inline(uri, 0, len("The capital of France is"))
    assert isinstance(item.insert_text, str) and item.insert_text.startswith(" Paris")
