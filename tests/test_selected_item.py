"""Applying the item selected in a completion list to the text before a suggestion is made."""

from __future__ import annotations

import pytest

from phi3_lsp.positions import Encoding, LineIndex
from phi3_lsp.selected_item import AppliedItem, apply_selected_item

TEXT = "def count_tokens(text):\n    tokens = tok\n    return tokens\n"
LINE, WORD_START, CURSOR = 1, len("    tokens = "), len("    tokens = tok")
CURSOR_OFFSET = TEXT.index("tok\n") + 3


def applied(
    start: tuple[int, int],
    end: tuple[int, int],
    text: str = "tokenizer",
    cursor: int = CURSOR_OFFSET,
) -> AppliedItem | None:
    return apply_selected_item(LineIndex(TEXT), cursor, start, end, text, "utf-16")


def before_and_after(item: AppliedItem | None) -> tuple[str, str]:
    """The applied text before the cursor and after it."""
    assert item is not None
    text = item.lines.text
    return text[: item.cursor], text[item.cursor :]


def test_the_item_replaces_its_range_and_the_cursor_follows_it() -> None:
    before, after = before_and_after(applied((LINE, WORD_START), (LINE, CURSOR)))
    assert before == "def count_tokens(text):\n    tokens = tokenizer"
    assert after == "\n    return tokens\n"


def test_what_follows_the_range_stays_after_the_cursor() -> None:
    # VS Code's "replace" mode: the range runs past the cursor, over the rest of the word.
    text = "print(nm)\n"
    item = apply_selected_item(LineIndex(text), len("print(n"), (0, 6), (0, 8), "name", "utf-16")
    assert before_and_after(item) == ("print(name", ")\n")


def test_an_item_of_several_lines_puts_the_cursor_after_its_last() -> None:
    before, after = before_and_after(
        applied((LINE, WORD_START), (LINE, CURSOR), "tokenizer(text)\n    print(tokens)")
    )
    assert before.endswith("    tokens = tokenizer(text)\n    print(tokens)")
    assert after == "\n    return tokens\n"


def test_a_character_past_the_end_of_the_line_is_its_end() -> None:
    before, after = before_and_after(applied((LINE, WORD_START), (LINE, 500)))
    assert before.endswith("tokens = tokenizer") and after == "\n    return tokens\n"


@pytest.mark.parametrize(("encoding", "emoji_units"), [("utf-16", 2), ("utf-8", 4), ("utf-32", 1)])
def test_the_range_counts_code_units_of_the_encoding(encoding: Encoding, emoji_units: int) -> None:
    text = "😀 x = tok"
    start = emoji_units + len(" x = ")
    item = apply_selected_item(
        LineIndex(text), len(text), (0, start), (0, start + 3), "tokens", encoding
    )
    assert before_and_after(item) == ("😀 x = tokens", "")


UNUSABLE = {
    "on another line": ((0, 4), (0, 16)),
    "on two lines": ((0, 4), (LINE, CURSOR)),
    "ending before it starts": ((LINE, CURSOR), (LINE, WORD_START)),
    "before the cursor": ((LINE, 4), (LINE, 10)),
    "past the last line": ((9, 0), (9, 3)),
}


@pytest.mark.parametrize("name", UNUSABLE)
def test_a_range_the_item_cannot_replace_at_the_cursor_is_refused(name: str) -> None:
    assert applied(*UNUSABLE[name]) is None


def test_a_range_after_the_cursor_is_refused() -> None:
    word_start_offset = CURSOR_OFFSET - len("tok")
    assert applied((LINE, WORD_START + 1), (LINE, CURSOR), cursor=word_start_offset) is None
