"""Inline completion while the client's completion list is open: the suggestion extends the
list's selected item (LSP 3.18's `selectedCompletionInfo`), or VS Code does not show it."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types

from e2e.lsp_session import SMOLLM2_SETTINGS, Phi3Client, start, stop, vscode_capabilities

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# The user has typed `tok`; the list offers `tokenizer` for the three characters.
TYPED = "def count_tokens(text):\n    tokens = tok"
LINE, CURSOR, WORD_START = 1, len("    tokens = tok"), len("    tokens = ")
ITEM = "tokenizer"
APPLIED = "def count_tokens(text):\n    tokens = tokenizer"


def position(line: int, character: int) -> types.Position:
    return types.Position(line=line, character=character)


def selected(
    start: tuple[int, int], end: tuple[int, int], text: str = ITEM
) -> types.SelectedCompletionInfo:
    return types.SelectedCompletionInfo(
        range=types.Range(start=position(*start), end=position(*end)), text=text
    )


WORD = selected((LINE, WORD_START), (LINE, CURSOR))


def units(text: str, encoding: str = "utf-16") -> int:
    """The length of `text` in code units of a position encoding."""
    codec, unit_bytes = {"utf-8": ("utf-8", 1), "utf-16": ("utf-16-le", 2)}.get(
        encoding, ("utf-32-le", 4)
    )
    return len(text.encode(codec)) // unit_bytes


async def continuation_of(
    client: Phi3Client, name: str, text: str, encoding: str = "utf-16"
) -> str:
    """The suggestion at the end of `text` in a document of its own."""
    uri = client.open_text(name, text)
    lines = text.split("\n")
    [item] = await client.inline(uri, len(lines) - 1, units(lines[-1], encoding))
    assert isinstance(item.insert_text, str) and item.insert_text.strip()
    return item.insert_text


async def test_the_suggestion_extends_the_selected_item_over_its_range(smollm2: Phi3Client) -> None:
    uri = smollm2.open_text("selected.py", TYPED)
    [item] = await smollm2.inline(uri, LINE, CURSOR, selected=WORD)
    # VS Code shows it only so, as the list's selection extended.
    assert item.range == WORD.range
    assert isinstance(item.insert_text, str) and item.insert_text.startswith(ITEM)
    # What follows the item is what the model writes once the item is in the document.
    expected = await continuation_of(smollm2, "selected-reference.py", APPLIED)
    assert item.insert_text == ITEM + expected


async def test_accepting_the_selected_item_is_answered_without_the_model(
    smollm2: Phi3Client,
) -> None:
    uri = smollm2.open_text("accept-item.py", TYPED)
    [item] = await smollm2.inline(uri, LINE, CURSOR, selected=WORD)
    assert isinstance(item.insert_text, str)
    smollm2.replace_text(uri, APPLIED, version=2)  # Enter on the list's item
    seen = len(smollm2.statuses)
    after = len(f"    tokens = {ITEM}")
    [rest] = await smollm2.inline(uri, LINE, after)
    assert smollm2.generations_since(seen) == 0
    # The suggestion shown over the list, after the item: now as ghost text at the cursor.
    assert ITEM + str(rest.insert_text) == item.insert_text
    assert rest.range == types.Range(start=position(LINE, after), end=position(LINE, after))


async def test_typing_on_with_the_same_item_selected_asks_no_model(smollm2: Phi3Client) -> None:
    uri = smollm2.open_text("type-on.py", TYPED)
    [first] = await smollm2.inline(uri, LINE, CURSOR, selected=WORD)
    smollm2.replace_text(uri, TYPED + "e", version=2)  # the list still selects `tokenizer`
    seen = len(smollm2.statuses)
    longer = selected((LINE, WORD_START), (LINE, CURSOR + 1))
    [again] = await smollm2.inline(uri, LINE, CURSOR + 1, selected=longer)
    assert smollm2.generations_since(seen) == 0
    assert again.insert_text == first.insert_text
    assert again.range == longer.range


async def test_what_follows_the_range_stays_after_the_cursor(smollm2: Phi3Client) -> None:
    # Completing `nm` in place (VS Code's "replace" mode): the item replaces the word after the
    # cursor too, and the `)` after it is still there.
    before = 'def greet(name):\n    print("Hello, " + n'
    uri = smollm2.open_text("replace-mode.py", before + "m)\n")
    word_start, cursor = len('    print("Hello, " + '), len('    print("Hello, " + n')
    word = selected((1, word_start), (1, cursor + 1), "name")
    [item] = await smollm2.inline(uri, 1, cursor, selected=word)
    assert item.range == word.range
    reference = smollm2.open_text("replace-mode-reference.py", before + "ame)\n")
    [expected] = await smollm2.inline(reference, 1, cursor + len("ame"))
    # In the middle of a line: the one line that goes before the `)`.
    assert isinstance(expected.insert_text, str) and expected.insert_text.strip()
    assert item.insert_text == "name" + expected.insert_text


async def test_an_item_of_several_lines_is_continued_after_its_last(smollm2: Phi3Client) -> None:
    snippet = "tokenizer(text)\n    print(tokens)\n    return"
    uri = smollm2.open_text("several-lines.py", TYPED)
    item_of_lines = selected((LINE, WORD_START), (LINE, CURSOR), snippet)
    [item] = await smollm2.inline(uri, LINE, CURSOR, selected=item_of_lines)
    assert item.range == WORD.range
    expected = await continuation_of(
        smollm2, "several-lines-reference.py", TYPED.removesuffix("tok") + snippet
    )
    assert item.insert_text == snippet + expected


# Two emoji (two UTF-16 units each, four UTF-8 units, one UTF-32 unit) and an accent before
# the word on its line.
ENCODED = "# tokens\n😀🙂 café = tok"
ENCODED_APPLIED = "# tokens\n😀🙂 café = tokens"


async def test_the_range_is_read_in_utf16_code_units(smollm2: Phi3Client) -> None:
    uri = smollm2.open_text("emoji.py", ENCODED)
    cursor = units(ENCODED.split("\n")[1])
    word = selected((1, cursor - 3), (1, cursor), "tokens")
    [item] = await smollm2.inline(uri, 1, cursor, selected=word)
    assert item.range == word.range
    expected = await continuation_of(smollm2, "emoji-reference.py", ENCODED_APPLIED)
    assert item.insert_text == "tokens" + expected


@pytest.mark.parametrize("encoding", ["utf-8", "utf-32"])
async def test_the_range_is_read_in_the_negotiated_encoding(
    offline_pack: None, hf_home: Path, encoding: str
) -> None:
    capabilities = vscode_capabilities()
    capabilities.general = types.GeneralClientCapabilities(
        position_encodings=[types.PositionEncodingKind(encoding)]
    )
    client = await start("smollm2-135m", hf_home, capabilities, SMOLLM2_SETTINGS)
    try:
        await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
        uri = client.open_text("encoded.py", ENCODED)
        cursor = units(ENCODED.split("\n")[1], encoding)
        word = selected((1, cursor - 3), (1, cursor), "tokens")
        [item] = await client.inline(uri, 1, cursor, selected=word)
        assert item.range == word.range
        expected = await continuation_of(client, "encoded-reference.py", ENCODED_APPLIED, encoding)
        assert item.insert_text == "tokens" + expected
    finally:
        await stop(client)


# Items whose range the item could not replace at the cursor: the request is answered as one
# without it, with the continuation of the text as typed at the cursor.
UNUSABLE = {
    "on another line": selected((0, 4), (0, 16)),
    "ending before it starts": selected((LINE, CURSOR), (LINE, WORD_START)),
    "on two lines": selected((0, 4), (LINE, CURSOR)),
    "past the last line": selected((5, 0), (5, 3)),
    "not holding the cursor": selected((LINE, 4), (LINE, 10)),
}


@pytest.mark.parametrize("name", UNUSABLE)
async def test_an_item_whose_range_cannot_be_replaced_is_ignored(
    smollm2: Phi3Client, name: str
) -> None:
    uri = smollm2.open_text(f"unusable {name}.py", TYPED)
    [item] = await smollm2.inline(uri, LINE, CURSOR, selected=UNUSABLE[name])
    assert item.range == types.Range(start=position(LINE, CURSOR), end=position(LINE, CURSOR))
    expected = await continuation_of(smollm2, f"unusable {name} reference.py", TYPED)
    assert item.insert_text == expected
