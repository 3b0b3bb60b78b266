"""LSP positions in UTF-16 (and UTF-8/UTF-32) code units ⇄ Python string offsets."""

from __future__ import annotations

import random

import pytest

from phi3_lsp import text_blocks
from phi3_lsp.line_breaks import line_starts
from phi3_lsp.positions import Encoding, LineIndex


@pytest.fixture(autouse=True, params=["usual blocks", "blocks of 3 characters"])
def block_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test on texts held in blocks of the usual size (these texts fit in one) and in
    blocks of 3 characters, so that lines, "\r\n" pairs and edits fall across blocks."""
    if request.param == "blocks of 3 characters":
        monkeypatch.setattr(text_blocks, "BLOCK_CHARACTERS", 3)


def offset_at(text: str, line: int, character: int, encoding: Encoding = "utf-16") -> int | None:
    return LineIndex(text).offset_at(line, character, encoding)


def position_at(text: str, offset: int, encoding: Encoding = "utf-16") -> tuple[int, int]:
    return LineIndex(text).position_at(offset, encoding)


def line_after(text: str, offset: int) -> str:
    return LineIndex(text).line_after(offset)


# "é" is 1 UTF-16 unit / 2 UTF-8 bytes; "😀" is 2 UTF-16 units / 4 UTF-8 bytes.
TEXT = "café 😀 ok\nsecond line\r\nthird\rlast"


def test_ascii_positions_are_plain_offsets() -> None:
    assert offset_at("hello\nworld", 1, 3) == 9
    assert position_at("hello\nworld", 9) == (1, 3)


def test_utf16_counts_an_emoji_as_two_units() -> None:
    # Cursor right after the emoji: "café " is 5 units, the emoji 2 more.
    assert offset_at(TEXT, 0, 7) == TEXT.index("😀") + 1
    assert position_at(TEXT, TEXT.index(" ok")) == (0, 7)


@pytest.mark.parametrize(
    ("encoding", "character_after_emoji"),
    [("utf-8", 10), ("utf-16", 7), ("utf-32", 6)],
)
def test_each_encoding_counts_its_own_units(encoding: Encoding, character_after_emoji: int) -> None:
    offset_after_emoji = TEXT.index("😀") + 1
    assert offset_at(TEXT, 0, character_after_emoji, encoding) == offset_after_emoji
    assert position_at(TEXT, offset_after_emoji, encoding) == (0, character_after_emoji)


def test_a_position_inside_a_surrogate_pair_rounds_down_to_the_character() -> None:
    assert offset_at(TEXT, 0, 6) == TEXT.index("😀")


def units_of(char: str, encoding: Encoding) -> int:
    """The code units of one code point, by definition (a lone surrogate is one UTF-16 unit)."""
    if encoding == "utf-32":
        return 1
    if encoding == "utf-16":
        return 2 if ord(char) > 0xFFFF else 1
    return len(char.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
@pytest.mark.parametrize("lone_surrogates", [False, True])
def test_every_character_of_a_mixed_line_maps_to_the_code_point_it_falls_in(
    encoding: Encoding, lone_surrogates: bool
) -> None:
    chooser = random.Random(5)
    alphabet = ["a", " ", "é", "€", "😀", "中"] + (["\ud800", "\udfff"] if lone_surrogates else [])
    line = "".join(chooser.choice(alphabet) for _ in range(300))
    index = LineIndex(f"first\n{line}\nlast")
    units_before = [0]
    for char in line:
        units_before.append(units_before[-1] + units_of(char, encoding))
    for character in range(units_before[-1] + 3):
        # The code point whose units hold `character`, or the end of the line past its end.
        expected = max(i for i, before in enumerate(units_before) if before <= character)
        assert index.offset_at(1, character, encoding) == len("first\n") + expected
    for offset in range(len(line) + 1):
        assert index.position_at(len("first\n") + offset, encoding) == (1, units_before[offset])


def test_all_three_line_breaks_start_new_lines() -> None:
    assert line_starts(TEXT) == [
        0,
        TEXT.index("second"),
        TEXT.index("third"),
        TEXT.index("last"),
    ]
    assert offset_at(TEXT, 2, 0) == TEXT.index("third")
    assert offset_at(TEXT, 3, 4) == len(TEXT)


@pytest.mark.parametrize("text", ["", "\n", "one", "one\n", "one\ntwo\n\nfour", "😀\né\n"])
def test_lines_of_text_with_only_line_feeds_start_after_each(text: str) -> None:
    assert line_starts(text) == [0] + [index + 1 for index, char in enumerate(text) if char == "\n"]


def test_a_character_past_the_end_of_its_line_means_the_end_of_the_line() -> None:
    assert offset_at(TEXT, 1, 500) == TEXT.index("\r\nthird")
    assert offset_at(TEXT, 2, 500) == TEXT.index("\rlast")


def test_a_line_past_the_end_of_the_document_has_no_offset() -> None:
    assert offset_at(TEXT, 4, 0) is None
    assert offset_at("", 1, 0) is None
    assert offset_at(TEXT, -1, 0) is None


def test_the_empty_document_has_one_empty_line() -> None:
    assert offset_at("", 0, 0) == 0
    assert offset_at("", 0, 3) == 0
    assert position_at("", 0) == (0, 0)


def test_a_trailing_newline_opens_an_empty_last_line() -> None:
    assert offset_at("abc\n", 1, 0) == 4
    assert position_at("abc\n", 4) == (1, 0)


def test_round_trip_over_every_offset() -> None:
    for encoding in ("utf-8", "utf-16", "utf-32"):
        for offset in range(len(TEXT) + 1):
            if TEXT[offset - 1 : offset + 1] == "\r\n":
                continue  # between "\r" and "\n" is not a position a client can name
            line, character = position_at(TEXT, offset, encoding)
            assert offset_at(TEXT, line, character, encoding) == offset


def test_the_line_after_the_cursor_ends_at_any_line_break() -> None:
    assert line_after("return max()\nnext", len("return max(")) == ")"
    assert line_after("return max()\r\nnext", len("return max(")) == ")"
    assert line_after("return max()\rnext", len("return max(")) == ")"
    assert line_after("return max()", len("return max(")) == ")"
    assert line_after("end\rnext", len("end")) == ""
    assert line_after("end\r\nnext", len("end\r")) == ""  # between "\r" and "\n"
    assert line_after("end", len("end")) == ""


@pytest.mark.parametrize(
    "text", ["def f(x):\n    return x\n\n😀 é\n" * 30, "a\r\nb\rc\n" * 30, "", "\n\n"]
)
def test_an_edited_index_is_the_index_of_the_edited_text(text: str) -> None:
    chooser = random.Random(11)
    index = LineIndex(text)
    for _ in range(200):
        start = chooser.randrange(len(text) + 1)
        end = min(len(text), start + chooser.choice([0, 0, 1, 5, 40]))
        new_text = chooser.choice(["", "x", "\n", "ab\ncd\n", "\r", "é😀\n", "\r\n" * 9])
        index = index.replaced(start, end, new_text)
        text = text[:start] + new_text + text[end:]
        assert index.text == text
        assert list(index.starts) == line_starts(text)
        first, last = sorted(chooser.randrange(len(text) + 1) for _ in range(2))
        assert index.blocks[first:last] == text[first:last]
        fresh = LineIndex(text)
        for offset in range(0, len(text) + 1, 7):
            position = fresh.position_at(offset)
            assert index.position_at(offset) == position
            assert index.offset_at(*position) == fresh.offset_at(*position)


@pytest.mark.parametrize("new_text", ["", "\n", "\r", "x"])
@pytest.mark.parametrize("text", ["ab\rc\nd\r\nef\r", "abc\nde\nf\r\ng\r"])
def test_an_edit_that_joins_or_splits_a_carriage_return_and_a_line_feed(
    text: str, new_text: str
) -> None:
    for start in range(len(text) + 1):
        for end in range(start, min(len(text), start + 2) + 1):
            edited = text[:start] + new_text + text[end:]
            assert list(LineIndex(text).replaced(start, end, new_text).starts) == line_starts(
                edited
            )


def test_an_edit_leaves_the_text_it_was_made_on_as_it_was() -> None:
    # A hover that waits for its tokens reads the text of its request after later edits.
    text = "one\ntwo\r\nthree\n" * 3
    before = LineIndex(text)
    after = before.replaced(5, 20, "X\r")
    assert str(before.blocks) == text
    assert list(before.starts) == line_starts(text)
    assert after.text == text[:5] + "X\r" + text[20:]
