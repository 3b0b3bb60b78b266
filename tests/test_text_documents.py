"""Open documents apply the editor's edits by LSP's line rules, in the negotiated encoding."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from lsprotocol import types
from pygls.workspace import TextDocument

from phi3_lsp import text_blocks
from phi3_lsp.text_documents import IndexedDocument, IndexedWorkspace


def _edit(
    start: tuple[int, int], end: tuple[int, int], text: str
) -> types.TextDocumentContentChangePartial:
    return types.TextDocumentContentChangePartial(
        range=types.Range(
            start=types.Position(line=start[0], character=start[1]),
            end=types.Position(line=end[0], character=end[1]),
        ),
        text=text,
    )


def _document(text: str, encoding: str = "utf-16") -> IndexedDocument:
    workspace = IndexedWorkspace(None, [], encoding)
    workspace.put_text_document(
        types.TextDocumentItem(uri="untitled:a.py", language_id="python", version=1, text=text)
    )
    document = workspace.get_text_document("untitled:a.py")
    assert isinstance(document, IndexedDocument)
    return document


@pytest.mark.parametrize(
    ("text", "start", "end", "new_text", "expected"),
    [
        ("ab\ncd", (1, 1), (1, 1), "X", "ab\ncXd"),
        ("ab\r\ncd\ref", (2, 0), (2, 1), "E", "ab\r\ncd\rEf"),  # \r\n and \r end lines too
        ("ab\ncd\nef", (0, 1), (2, 1), "", "af"),  # across lines
        ("ab\ncd", (0, 9), (0, 9), "!", "ab!\ncd"),  # past the end of a line: its end
        ("ab\ncd", (5, 0), (5, 0), "!", "ab\ncd!"),  # past the last line: the end of the text
        ("a\x0cb\ncd", (1, 0), (1, 0), ">", "a\x0cb\n>cd"),  # a form feed does not end a line
        ("😀x\nz", (0, 2), (0, 3), "y", "😀y\nz"),  # the emoji is two UTF-16 units
        ("hello world", (0, 8), (0, 2), "ZZ", "heZZrld"),  # start after end: swapped
        ("ab\ncd\nef", (2, 1), (0, 1), "", "af"),  # the same across lines
    ],
)
def test_edits_land_where_the_editor_made_them(
    text: str, start: tuple[int, int], end: tuple[int, int], new_text: str, expected: str
) -> None:
    document = _document(text)
    document.apply_change(_edit(start, end, new_text))
    assert document.source == expected


@pytest.mark.parametrize(("encoding", "character"), [("utf-8", 4), ("utf-32", 1)])
def test_edits_count_characters_in_the_negotiated_encoding(encoding: str, character: int) -> None:
    document = _document("😀x", encoding)
    document.apply_change(_edit((0, character), (0, character + 1), "y"))
    assert document.source == "😀y"


@pytest.mark.parametrize("block_characters", [text_blocks.BLOCK_CHARACTERS, 5])
def test_random_edits_give_the_text_pygls_gives_where_it_splits_lines_as_lsp_does(
    block_characters: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text_blocks, "BLOCK_CHARACTERS", block_characters)
    chooser = random.Random(7)
    text = "def f(x):\n    return x  # é 😀\n\nclass A:\n    pass\n" * 20
    ours, theirs = _document(text), TextDocument("untitled:a.py", text)
    for _ in range(300):
        lines = ours.source.split("\n")
        start_line = chooser.randrange(len(lines))
        end_line = min(len(lines) - 1, start_line + chooser.choice([0, 0, 1, 2]))
        start_character = chooser.randrange(len(lines[start_line]) + 1)
        end_character = chooser.randrange(len(lines[end_line]) + 1)
        if end_line == start_line:
            end_character = max(end_character, start_character)
        start = (start_line, _utf16_units(lines[start_line][:start_character]))
        end = (end_line, _utf16_units(lines[end_line][:end_character]))
        change = _edit(start, end, chooser.choice(["", "x", "ab\n", "\n", "é😀"]))
        ours.apply_change(change)
        theirs.apply_change(change)
        assert ours.source == theirs.source


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_the_line_index_follows_the_text() -> None:
    document = _document("one\ntwo")
    index = document.line_index
    assert document.line_index is index  # kept while the text is unchanged
    document.apply_change(_edit((0, 3), (0, 3), "\nthree"))
    assert list(document.line_index.starts) == [0, 4, 10]


def test_an_edit_of_a_big_document_copies_about_its_own_size() -> None:
    # Each keystroke copied the whole text: 0.25-0.34 s in a 50 MB file with emoji, whose
    # string takes four bytes a character. This one takes 12.8 MB.
    line = "    value = compute(item)  # 😀\n"
    document = _document(line * 100_000)
    assert document.line_index is not None
    tracemalloc.start()
    try:
        for at in (0, 50_000, 99_999):
            tracemalloc.reset_peak()
            document.apply_change(_edit((at, 4), (at, 4), "x"))
            assert tracemalloc.get_traced_memory()[1] < 1_000_000
    finally:
        tracemalloc.stop()
    edited = line.replace("    ", "    x", 1)
    assert document.source == edited + line * 49_999 + edited + line * 49_998 + edited


def test_a_whole_text_change_after_edits_replaces_the_text() -> None:
    document = _document("one\ntwo")
    document.apply_change(_edit((1, 0), (1, 0), "2 "))
    document.apply_change(types.TextDocumentContentChangeWholeDocument(text="a\nb\nc"))
    assert document.source == "a\nb\nc"
    assert list(document.line_index.starts) == [0, 2, 4]
    document.apply_change(_edit((2, 0), (2, 1), "C"))
    assert document.source == "a\nb\nC"
