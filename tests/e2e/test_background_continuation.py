"""A completion answers within its time budget and the model goes on in the background."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from e2e.lsp_session import Phi3Client, start_smollm2, stop
from phi3_lsp import generation as generation_module

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMPT = "The capital of France is"
# 1 ms: the answer holds whatever was generated first, never the whole continuation of 40.
SETTINGS = {"maxNewTokens": 40, "answerBudgetMs": 1}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def budgeted(offline_pack: None, hf_home: Path) -> AsyncIterator[Phi3Client]:
    client = await start_smollm2(hf_home, SETTINGS)
    yield client
    await stop(client)


async def whole_continuation(client: Phi3Client, name: str) -> str:
    """The continuation of PROMPT in a fresh document, waited for whole (answerBudgetMs 0)."""
    uri = client.open_text(name, PROMPT)
    await client.change_settings({**SETTINGS, "answerBudgetMs": 0})
    try:
        [item] = await client.inline(uri, 0, len(PROMPT))
    finally:
        await client.change_settings(SETTINGS)
    assert isinstance(item.insert_text, str)
    return item.insert_text


async def test_typing_through_an_early_answer_gets_the_rest_from_the_same_generation(
    budgeted: Phi3Client,
) -> None:
    uri = budgeted.open_text("capital.txt", PROMPT)
    seen = len(budgeted.statuses)
    [early] = await budgeted.inline(uri, 0, len(PROMPT))
    assert isinstance(early.insert_text, str) and early.insert_text.strip()
    finished = await budgeted.wait_for_status(lambda status: status["state"] == "ready", after=seen)
    # The generation went on after the answer, to a continuation longer than what was shown.
    assert finished["lastTokens"] > 1
    accepted = early.insert_text
    budgeted.replace_text(uri, PROMPT + accepted, version=2)
    [rest] = await budgeted.inline(uri, 0, len(PROMPT + accepted))
    assert isinstance(rest.insert_text, str) and rest.insert_text.strip()
    assert budgeted.generations_since(seen) == 1, "the rest came without a second generation"
    # Together they are the whole greedy continuation, which a fresh document reproduces.
    assert await whole_continuation(budgeted, "whole.txt") == accepted + rest.insert_text


async def test_asking_again_while_it_grows_shows_only_complete_lines(
    budgeted: Phi3Client,
) -> None:
    uri = budgeted.open_text("growing.txt", PROMPT)
    seen = len(budgeted.statuses)
    answers: list[str] = []
    # Ask again at the same place while the continuation grows: each answer comes from the
    # generation running in the background, whatever it holds at that moment.
    while not any(status["state"] == "ready" for status in budgeted.statuses[seen:]):
        [item] = await budgeted.inline(uri, 0, len(PROMPT))
        assert isinstance(item.insert_text, str)
        answers.append(item.insert_text)
        await asyncio.sleep(0.05)
    assert budgeted.generations_since(seen) == 1, "every answer came from the same generation"
    whole = await whole_continuation(budgeted, "growing-whole.txt")
    assert "\n" in whole.strip(), "the test needs several lines"
    for answer in answers:
        assert whole.startswith(answer)
        # Past its first line, an answer never ends inside a line still being generated.
        if "\n" in answer.strip():
            assert answer == whole or whole[len(answer)] in "\r\n", answer


async def test_asking_again_after_a_cancelled_request_never_shows_a_line_cut_short(
    budgeted: Phi3Client,
) -> None:
    whole = await whole_continuation(budgeted, "cut-whole.txt")
    await budgeted.change_settings({**SETTINGS, "answerBudgetMs": 0})
    answers: list[str] = []
    try:
        # The first answer read the prompt as well; those below find it read (one ended within
        # 0.34 s where the first took 0.48 s), so they are timed on one of their own kind.
        generating = await generating_seconds(budgeted, "cut-timed.txt")
        # Stopped at several points of the continuation (its first line, its second), each
        # time well before it ends, then asked again.
        for share in (0.15, 0.35, 0.55):
            name = f"cut-{share}.txt"
            answers.append(await answer_after_a_cancel(budgeted, name, share * generating))
    finally:
        await budgeted.change_settings(SETTINGS)
    for answer in answers:
        assert whole.startswith(answer)
        # Whole lines of the continuation (or all of it), not what the stop happened to leave.
        assert answer == whole or whole[len(answer)] in "\r\n", (answer, whole)


async def generating_seconds(client: Phi3Client, name: str) -> float:
    """Seconds from the "generating" status of a request for PROMPT's continuation to its
    answer, in a fresh document."""
    uri = client.open_text(name, PROMPT)
    seen = len(client.statuses)
    request = asyncio.ensure_future(client.inline(uri, 0, len(PROMPT)))
    await client.wait_for_status(lambda status: status["state"] == "generating", after=seen)
    started = time.perf_counter()
    await request
    return time.perf_counter() - started


async def answer_after_a_cancel(client: Phi3Client, name: str, seconds: float) -> str:
    """Ask for PROMPT's continuation, cancel after `seconds` of generating, then ask again.

    A machine that got faster since `seconds` was timed may finish first: then the same is
    asked in a new document, cancelled after half as long.
    """
    for attempt in range(4):
        uri = client.open_text(f"{attempt}-{name}", PROMPT)
        seen = len(client.statuses)
        msg_id = f"{attempt}-{name}"
        request = asyncio.ensure_future(client.inline(uri, 0, len(PROMPT), msg_id=msg_id))
        await client.wait_for_status(lambda status: status["state"] == "generating", after=seen)
        await asyncio.sleep(seconds / 2**attempt)
        if not request.done():
            break
    # The user moved on before the answer: the model stops wherever it is.
    client.cancel_request(types.CancelParams(id=msg_id))
    with pytest.raises(JsonRpcRequestCancelled):
        await request
    await client.wait_for_status(lambda status: status["state"] == "ready", after=seen)
    [again] = await client.inline(uri, 0, len(PROMPT))
    assert isinstance(again.insert_text, str)
    return again.insert_text


async def test_reading_a_long_prompt_shows_progress_until_it_is_read(
    budgeted: Phi3Client,
) -> None:
    # ~1,500 tokens of real source: SmolLM2 takes seconds to read them on a CPU of this class;
    # a prompt read within a second would show no progress.
    source = Path(generation_module.__file__).read_text(encoding="utf-8")
    await budgeted.change_settings({**SETTINGS, "contextTokens": 2000})
    earlier_tokens = set(budgeted.progress_reports)
    try:
        uri = budgeted.open_text("long_source.py", source)
        seen = len(budgeted.statuses)
        last_line = source.split("\n")[-1]
        await budgeted.inline(uri, source.count("\n"), len(last_line))
        await budgeted.wait_for_status(lambda status: status["state"] == "ready", after=seen)
    finally:
        await budgeted.change_settings(SETTINGS)
    [reports] = [
        reports
        for token, reports in budgeted.progress_reports.items()
        if token not in earlier_tokens
    ]
    begin, *middle, end = reports
    assert isinstance(begin, types.WorkDoneProgressBegin)
    assert begin.title == "Reading the prompt"
    percentages = [report.percentage for report in middle]
    assert percentages and all(
        isinstance(report, types.WorkDoneProgressReport) for report in middle
    )
    assert percentages == sorted(percentages)
    assert all(percentage is not None and 0 <= percentage < 100 for percentage in percentages)
    assert isinstance(end, types.WorkDoneProgressEnd) and end.message is not None
    tokens_read = re.fullmatch(r"([\d,]+) of ([\d,]+) tokens", end.message)
    assert tokens_read is not None
    read, total = tokens_read.groups()
    assert read == total


async def test_a_request_cancelled_while_its_prompt_is_built_leaves_nothing_to_wait_for(
    budgeted: Phi3Client,
) -> None:
    # A long prompt: tokenizing ~7,000 tokens of it takes ~26 ms here, the span in which most of
    # the cancels below land (one landing before or after it passes either way).
    package = Path(generation_module.__file__).parent
    text = "\n".join(path.read_text(encoding="utf-8") for path in sorted(package.glob("*.py")))
    await budgeted.change_settings({**SETTINGS, "contextTokens": 8192})
    try:
        uri = budgeted.open_text("cancelled-early.py", text)
        # Read once; each request below reuses its keys and values and reads only what follows.
        await budgeted.inline(uri, *end_of(text))
        for version, delay_ms in enumerate((1, 3, 6, 10, 15), start=2):
            # The user types a few characters, a request goes out, and typing on cancels it.
            text += f"\nvalue_{version} ="
            budgeted.replace_text(uri, text, version)
            name = f"cancelled-early-{version}"
            request = asyncio.ensure_future(budgeted.inline(uri, *end_of(text), msg_id=name))
            await asyncio.sleep(delay_ms / 1000)
            budgeted.cancel_request(types.CancelParams(id=name))
            with contextlib.suppress(JsonRpcRequestCancelled):  # a cancel may also come too late
                await request
            # Asked again at the same place, it is answered instead of waiting on the first.
            [again] = await asyncio.wait_for(budgeted.inline(uri, *end_of(text)), 60)
            assert isinstance(again.insert_text, str) and again.insert_text.strip(), delay_ms
    finally:
        await budgeted.change_settings(SETTINGS)


def end_of(text: str) -> tuple[int, int]:
    """The line and character (UTF-16, ASCII here) at the end of `text`."""
    return text.count("\n"), len(text.split("\n")[-1])


def numbered_lines(count: int) -> str:
    """Numbered lines the model goes on numbering for as long as it may."""
    return "".join(
        f"# line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(count)
    )


async def its_generation(client: Phi3Client, seen: int) -> int:
    """The index of the first "generating" status at index ≥ `seen` (the request made after
    status `seen`), once its generation has ended: a "ready" from an earlier one (a stopped
    generation's may come late) is not its end."""
    started = await client.wait_for_status(
        lambda status: status["state"] == "generating", after=seen
    )
    index = next(i for i in range(seen, len(client.statuses)) if client.statuses[i] is started)
    await client.wait_for_status(lambda status: status["state"] == "ready", after=index + 1)
    return index


async def test_a_dismissed_suggestion_stops_its_continuation(budgeted: Phi3Client) -> None:
    # 40 tokens take SmolLM2 a second or so: the dismissal comes well before their end.
    uri = budgeted.open_text("dismissed.txt", numbered_lines(10))
    seen = len(budgeted.statuses)
    [early] = await budgeted.inline(uri, 10, 0)
    assert isinstance(early.insert_text, str) and early.insert_text.strip()
    budgeted.dismiss_suggestion({"textDocument": {"uri": uri}})
    started = await its_generation(budgeted, seen)
    assert budgeted.finished_generations_since(started) == 0, "it ran to its end"


async def test_dismissing_another_document_leaves_the_continuation_running(
    budgeted: Phi3Client,
) -> None:
    uri = budgeted.open_text("kept.txt", PROMPT)
    other = budgeted.open_text("other.txt", PROMPT)
    seen = len(budgeted.statuses)
    [early] = await budgeted.inline(uri, 0, len(PROMPT))
    assert isinstance(early.insert_text, str) and early.insert_text.strip()
    budgeted.dismiss_suggestion({"textDocument": {"uri": other}})
    # Params without a document are refused, and the server goes on.
    budgeted.dismiss_suggestion({"uri": uri})
    started = await its_generation(budgeted, seen)
    assert budgeted.finished_generations_since(started) == 1, "it was stopped"
    [rest] = await budgeted.inline(uri, 0, len(PROMPT))
    assert rest.insert_text == await whole_continuation(budgeted, "kept-whole.txt")
