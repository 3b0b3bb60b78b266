"""Completions from SmolLM2-135M through the real server: text, positions, cancellation."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from e2e.lsp_session import (
    ANSWER_TIMEOUT,
    SMOLLM2_MAX_NEW_TOKENS,
    SMOLLM2_SETTINGS,
    Phi3Client,
    hover_text,
    inline_params,
)
from model_sources import checkpoint_bytes

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PROMPT = "The capital of France is"
# A prompt whose continuation runs to the token limit, so there is time to interrupt it.
LONG_PROMPT = "def fibonacci(n):\n    "


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def test_inline_completion_continues_with_paris(smollm2: Phi3Client) -> None:
    uri = smollm2.open_text("capital.txt", PROMPT)
    items = await smollm2.inline(uri, 0, len(PROMPT))
    assert len(items) == 1
    text = items[0].insert_text
    assert isinstance(text, str)
    assert text.startswith(" Paris")
    # Only the new text: the prompt is not repeated.
    assert not text.lstrip().startswith("The capital")
    cursor = types.Position(line=0, character=len(PROMPT))
    assert items[0].range == types.Range(start=cursor, end=cursor)
    status = smollm2.statuses[-1]
    assert status["state"] == "ready"
    assert 1 <= status["lastTokens"] <= SMOLLM2_MAX_NEW_TOKENS
    assert status["lastLatencyMs"] > 0
    # Decode passes come after the prompt's pass, which gave the first token.
    assert 0 <= status["lastDecodeMs"] <= status["lastLatencyMs"]
    assert 0 <= status["lastDecodePasses"] <= status["lastTokens"]


async def test_the_cursor_is_found_after_emoji_and_accents(smollm2: Phi3Client) -> None:
    before = "🙂 first line\nCafé ☕, 😀 and naïve: " + PROMPT
    after = " and that is a fact."
    line, character = 1, utf16_length(before.split("\n")[1])
    # The same text with nothing after the cursor: a cursor off by one unit (the emoji are
    # two UTF-16 units each) would cut "is" short or take in " " of " and", and differ.
    reference = smollm2.open_text("emoji-end.txt", before)
    [expected] = await smollm2.inline(reference, line, character)
    uri = smollm2.open_text("emoji-middle.txt", before + after)
    [item] = await smollm2.inline(uri, line, character)
    assert isinstance(item.insert_text, str) and item.insert_text.strip()
    assert isinstance(expected.insert_text, str)
    # In the middle of a line, only the first line of the continuation is shown.
    assert item.insert_text == expected.insert_text.split("\n")[0].rstrip()
    cursor = types.Position(line=line, character=character)
    assert item.range == types.Range(start=cursor, end=cursor)


async def test_in_the_middle_of_a_line_the_suggestion_ends_before_its_rest(
    smollm2: Phi3Client,
) -> None:
    before = "def add(a, b):\n    return max("
    line, character = 1, len("    return max(")
    reference = smollm2.open_text("max-end.py", before)
    [at_the_end] = await smollm2.inline(reference, line, character)
    assert isinstance(at_the_end.insert_text, str)
    tokens_at_the_end = smollm2.statuses[-1]["lastTokens"]
    uri = smollm2.open_text("max-middle.py", before + ")\n")
    [item] = await smollm2.inline(uri, line, character)
    text = item.insert_text
    assert isinstance(text, str) and text.strip()
    # One line, which with the ")" already there reads as the model's own first line.
    assert "\n" not in text
    assert at_the_end.insert_text.startswith(text + ")\n")
    # The model stopped at the line break instead of writing lines nobody would see.
    assert smollm2.statuses[-1]["lastTokens"] < tokens_at_the_end


async def test_once_the_rest_of_the_line_is_deleted_the_whole_continuation_comes(
    smollm2: Phi3Client,
) -> None:
    before = "def add(a, b):\n    return max("
    line, character = 1, len("    return max(")
    uri = smollm2.open_text("max-deleted.py", before + ")\n")
    [one_line] = await smollm2.inline(uri, line, character)
    assert isinstance(one_line.insert_text, str) and "\n" not in one_line.insert_text
    smollm2.replace_text(uri, before, version=2)  # the ")" deleted: the cursor ends its line
    [whole] = await smollm2.inline(uri, line, character)
    reference = smollm2.open_text("max-deleted-reference.py", before)
    [fresh] = await smollm2.inline(reference, line, character)
    assert isinstance(fresh.insert_text, str) and "\n" in fresh.insert_text
    assert whole.insert_text == fresh.insert_text


async def classic(client: Phi3Client, uri: str, line: int, character: int) -> types.CompletionItem:
    """The one classic completion item at a position."""
    params = types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
    )
    answer = await asyncio.wait_for(client.text_document_completion_async(params), ANSWER_TIMEOUT)
    assert isinstance(answer, types.CompletionList)
    assert answer.is_incomplete is True
    [item] = answer.items
    return item


async def test_classic_completion_offers_the_same_continuation(smollm2: Phi3Client) -> None:
    uri = smollm2.open_text("classic.txt", PROMPT)
    item = await classic(smollm2, uri, 0, len(PROMPT))
    # The menu shows the continuation, not the word it retypes.
    assert item.label.startswith("Paris")
    assert isinstance(item.text_edit, types.TextEdit)
    # The word before the cursor, then the continuation, in its place.
    assert item.text_edit.new_text.startswith("is Paris")
    assert item.text_edit.range == types.Range(
        start=types.Position(line=0, character=len(PROMPT) - len("is")),
        end=types.Position(line=0, character=len(PROMPT)),
    )
    assert item.filter_text == item.text_edit.new_text


# (text before the cursor, after it on its line, the word before the cursor)
CLASSIC_PLACES = {
    "after a word": ("The capital of France is", "", "is"),
    "after a space": ("The capital of France is ", "", ""),
    "at a line's start": ("The capital of France is Paris.\n", "", ""),
    "in a word": ("The capital of France is Pa", "ris today.", "Pa"),
    "after punctuation": ("def add(a, b):\n    return max(", "", ""),
    "after an accented word, past emoji": ("Café ☕, 😀 and naïve", "", "naïve"),
}


@pytest.mark.parametrize("name", CLASSIC_PLACES)
async def test_classic_completion_retypes_the_word_before_the_cursor(
    smollm2: Phi3Client, name: str
) -> None:
    before, after, word = CLASSIC_PLACES[name]
    line = before.count("\n")
    line_before = before.split("\n")[-1]
    character = utf16_length(line_before)
    uri = smollm2.open_text(f"classic {name}.txt", before + after)
    [inline] = await smollm2.inline(uri, line, character)
    assert isinstance(inline.insert_text, str) and inline.insert_text
    item = await classic(smollm2, uri, line, character)
    assert isinstance(item.text_edit, types.TextEdit)
    edit = item.text_edit
    # The range covers the word before the cursor, in UTF-16 units (VS Code filters with the
    # text it covers; Neovim without filterText filters from its start).
    word_start = types.Position(line=line, character=character - utf16_length(word))
    assert edit.range == types.Range(
        start=word_start, end=types.Position(line=line, character=character)
    )
    # Neovim 0.7's omnifunc keeps an item only if its new text begins with the word before the
    # cursor; Helix and VS Code match that word against filterText.
    assert edit.new_text.startswith(word)
    assert isinstance(item.filter_text, str) and item.filter_text.startswith(word)
    # Applied, the edit gives what the inline completion gives: the continuation at the cursor.
    assert edit.new_text == word + inline.insert_text


async def test_a_changed_limit_applies_to_the_next_completion(smollm2: Phi3Client) -> None:
    await smollm2.change_settings({**SMOLLM2_SETTINGS, "maxNewTokens": 50})
    try:
        uri = smollm2.open_text("limit.py", LONG_PROMPT)
        [item] = await smollm2.inline(uri, 1, 4)
        # This continuation runs on past 16 tokens; the default limit of 50 stops it.
        assert SMOLLM2_MAX_NEW_TOKENS < smollm2.statuses[-1]["lastTokens"] <= 50
        assert isinstance(item.insert_text, str) and item.insert_text.count("\n") >= 2
    finally:
        await smollm2.change_settings(SMOLLM2_SETTINGS)


async def test_a_changed_limit_applies_when_asked_again_at_the_same_place(
    smollm2: Phi3Client,
) -> None:
    uri = smollm2.open_text("limit-here.txt", PROMPT)
    [long] = await smollm2.inline(uri, 0, len(PROMPT))
    await smollm2.change_settings({**SMOLLM2_SETTINGS, "maxNewTokens": 2})
    try:
        seen = len(smollm2.statuses)
        [short] = await smollm2.inline(uri, 0, len(PROMPT))
    finally:
        await smollm2.change_settings(SMOLLM2_SETTINGS)
    # Made anew under the new limit, not the suggestion already made here.
    assert smollm2.generations_since(seen) == 1
    assert isinstance(long.insert_text, str) and isinstance(short.insert_text, str)
    assert short.insert_text and long.insert_text.startswith(short.insert_text)
    assert len(short.insert_text) < len(long.insert_text)


async def test_after_accepting_a_suggestion_cut_at_a_line_break_a_new_one_comes(
    smollm2: Phi3Client,
) -> None:
    # Three tokens make " Paris.\n", shown as " Paris.": accepting it leaves the break unseen.
    await smollm2.change_settings({**SMOLLM2_SETTINGS, "maxNewTokens": 3})
    try:
        uri = smollm2.open_text("accepted.txt", PROMPT)
        [item] = await smollm2.inline(uri, 0, len(PROMPT))
        assert item.insert_text == " Paris."
        accepted = PROMPT + item.insert_text
        smollm2.replace_text(uri, accepted, version=2)
        seen = len(smollm2.statuses)
        [after] = await smollm2.inline(uri, 0, len(accepted))
    finally:
        await smollm2.change_settings(SMOLLM2_SETTINGS)
    assert isinstance(after.insert_text, str) and after.insert_text.strip()
    assert smollm2.generations_since(seen) == 1


async def test_a_request_sent_right_after_a_settings_change_obeys_it(smollm2: Phi3Client) -> None:
    # The server asks the client for the new settings (workspace/configuration) after the
    # change, and a completion request is already on its way: it must wait for them.
    uri = smollm2.open_text("switched-off.txt", PROMPT)
    smollm2.announce_settings({**SMOLLM2_SETTINGS, "inlineCompletions": False})
    try:
        assert await smollm2.inline(uri, 0, len(PROMPT)) == []
    finally:
        await smollm2.change_settings(SMOLLM2_SETTINGS)
    [item] = await smollm2.inline(uri, 0, len(PROMPT))
    assert isinstance(item.insert_text, str) and item.insert_text.startswith(" Paris")


async def test_a_request_waiting_for_settings_continues_the_text_it_was_asked_on(
    smollm2: Phi3Client,
) -> None:
    # The request waits for the settings the server is asking for; an edit that comes
    # meanwhile must not give it another text than the one its position belongs to.
    uri = smollm2.open_text("edited-meanwhile.txt", PROMPT)
    smollm2.announce_settings(SMOLLM2_SETTINGS)
    # Sent at once (pytest-lsp's send_request_async sends only once awaited), then the edit:
    # the server reads both before it runs a handler.
    answer = smollm2.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 0, len(PROMPT))
    )
    smollm2.replace_text(uri, "The capital of Spain is", version=2)
    result = await asyncio.wait_for(asyncio.wrap_future(answer), ANSWER_TIMEOUT)
    [item] = result.items if isinstance(result, types.InlineCompletionList) else result
    assert isinstance(item.insert_text, str) and item.insert_text.startswith(" Paris")


async def test_a_document_closed_while_its_prompt_is_built_gets_no_generation(
    smollm2: Phi3Client,
) -> None:
    # Tokenizing this prompt takes tens of milliseconds: the close is handled meanwhile.
    text = "".join(f"value_{number} = {number} * 2\n" for number in range(3000)) + PROMPT
    uri = smollm2.open_text("closed-meanwhile.txt", text)
    line = text.count("\n")
    seen = len(smollm2.statuses)
    answer = smollm2.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, line, len(PROMPT))
    )
    smollm2.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    result = await asyncio.wait_for(asyncio.wrap_future(answer), ANSWER_TIMEOUT)
    assert isinstance(result, types.InlineCompletionList) and not result.items
    # Nothing was generated for it (and no keys and values kept for a closed document).
    await smollm2.hover_at(uri, 0, 0)  # answered after any status the request caused
    assert smollm2.generations_since(seen) == 0


async def test_typing_through_a_suggestion_answers_without_the_model(smollm2: Phi3Client) -> None:
    uri = smollm2.open_text("typing.txt", PROMPT)
    [first] = await smollm2.inline(uri, 0, len(PROMPT))
    suggestion = first.insert_text
    assert isinstance(suggestion, str) and suggestion.startswith(" Paris")
    smollm2.replace_text(uri, PROMPT + " Pa", version=2)
    seen = len(smollm2.statuses)
    [rest] = await smollm2.inline(uri, 0, len(PROMPT) + 3)
    assert rest.insert_text == suggestion[3:]
    assert smollm2.generations_since(seen) == 0


async def test_hover_answers_while_a_completion_runs_and_cancel_stops_it(
    smollm2: Phi3Client,
) -> None:
    uri = smollm2.open_text("fib.py", LONG_PROMPT)
    seen = len(smollm2.statuses)
    tokens_before = smollm2.statuses[-1]["lastTokens"]
    request = asyncio.ensure_future(smollm2.inline(uri, 1, 4, msg_id="long-completion"))
    await smollm2.wait_for_status(lambda status: status["state"] == "generating", after=seen)

    hover = await smollm2.hover_at(uri, 0, LONG_PROMPT.index("fibonacci"))
    assert "fib" in hover_text(hover)
    assert not request.done()  # the hover did not wait for the model

    smollm2.cancel_request(types.CancelParams(id="long-completion"))
    with pytest.raises(JsonRpcRequestCancelled):
        await request
    ready = await smollm2.wait_for_status(lambda status: status["state"] == "ready", after=seen)
    # Stopped, not finished: the last completion's figures are still the previous one's.
    assert ready["lastTokens"] == tokens_before
    assert await smollm2.hover_at(uri, 0, LONG_PROMPT.index("fibonacci")) is not None


async def test_only_the_last_of_ten_quick_requests_generates_to_the_end(
    smollm2: Phi3Client,
) -> None:
    # A user typing on: each request has more text before the cursor than the last, and the
    # text typed is not what was suggested, so each new request makes the previous one moot.
    typed = " a city in Europe, on the river Seine, and"
    uri = smollm2.open_text("burst.txt", PROMPT + typed)
    seen = len(smollm2.statuses)
    requests = [
        smollm2.protocol.send_request_async(  # type: ignore[no-untyped-call]
            types.TEXT_DOCUMENT_INLINE_COMPLETION,
            inline_params(uri, 0, len(PROMPT) + 3 * (step + 1)),
        )
        for step in range(10)
    ]
    answers = await asyncio.wait_for(asyncio.gather(*requests), ANSWER_TIMEOUT)
    items = [list(answer.items) for answer in answers]
    assert items[:9] == [[]] * 9
    assert len(items[9]) == 1
    assert items[9][0].insert_text.strip()
    # Each may start while it is the newest request the server has read, but the model stops
    # it within a layer once a newer one arrives: only the last runs to its end.
    assert smollm2.finished_generations_since(seen) == 1


async def test_asking_again_at_the_same_place_joins_the_running_generation(
    smollm2: Phi3Client,
) -> None:
    uri = smollm2.open_text("again.txt", PROMPT)
    seen = len(smollm2.statuses)
    requests = [
        smollm2.protocol.send_request_async(  # type: ignore[no-untyped-call]
            types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 0, len(PROMPT))
        )
        for _ in range(3)
    ]
    answers = await asyncio.wait_for(asyncio.gather(*requests), ANSWER_TIMEOUT)
    texts = [[item.insert_text for item in answer.items] for answer in answers]
    assert texts[0][0].startswith(" Paris")
    assert texts == [texts[0]] * 3
    assert smollm2.generations_since(seen) == 1


async def test_positions_past_the_end_and_unknown_documents_give_nothing(
    smollm2: Phi3Client,
) -> None:
    uri = smollm2.open_text("short.txt", PROMPT)
    assert await smollm2.inline(uri, 5, 0) == []
    assert await smollm2.hover_at(uri, 5, 0) is None
    assert await smollm2.hover_at(uri, 0, 500) is None
    assert await smollm2.inline("file:///never/opened.txt", 0, 3) == []
    assert await smollm2.hover_at("file:///never/opened.txt", 0, 3) is None
    assert await smollm2.command("phi3.status") == smollm2.statuses[-1]


async def test_a_character_past_the_end_of_the_line_completes_at_its_end(
    smollm2: Phi3Client,
) -> None:
    uri = smollm2.open_text("past-the-end.txt", PROMPT)
    [item] = await smollm2.inline(uri, 0, 999)
    assert isinstance(item.insert_text, str) and item.insert_text.startswith(" Paris")
    end = types.Position(line=0, character=len(PROMPT))
    # The suggestion goes where the text ends, not at a place the document does not have.
    assert item.range == types.Range(start=end, end=end)
    params = types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=0, character=999),
    )
    answer = await asyncio.wait_for(smollm2.text_document_completion_async(params), ANSWER_TIMEOUT)
    assert isinstance(answer, types.CompletionList)
    [classic] = answer.items
    assert isinstance(classic.text_edit, types.TextEdit)
    # It retypes the last word, "is", up to where the text ends.
    word_start = types.Position(line=0, character=len(PROMPT) - len("is"))
    assert classic.text_edit.range == types.Range(start=word_start, end=end)


async def test_the_weights_read_speed_counts_every_weight_once(smollm2: Phi3Client) -> None:
    from phi3_lsp.offline_pack import ensure_asset

    reads = await smollm2.command("phi3.measureWeightReads")
    # SmolLM2's vocabulary projection is its input embeddings: every stored tensor is read, as
    # the exact blocks they are held as: its linear layers' Q4_1 (24 bytes for 32 fp32 values),
    # its embeddings' Q8_0 (36 bytes for 32).
    folder = ensure_asset("smollm2-135m")
    linear = checkpoint_bytes(folder, ending="_proj.weight")
    embeddings = checkpoint_bytes(folder, ending="embed_tokens.weight")
    rest = checkpoint_bytes(folder) - linear - embeddings
    read = rest + linear * 24 // 128 + embeddings * 36 // 128
    assert read <= reads["bytesRead"] <= read + 1024
    assert reads["seconds"] > 0
    assert reads["bytesPerSecond"] == pytest.approx(reads["bytesRead"] / reads["seconds"])
