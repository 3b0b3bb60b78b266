"""A hover's token table shows each token as it is, whatever characters it holds.

The table is rendered by markdown-it-py (CommonMark with GitHub's tables), the Python port of
the renderer of VS Code's Markdown preview; its hovers use marked, which splits cells the same
way except at a pipe after a backslash (see `token_table._cell`).
"""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from phi3_lsp.token_table import token_columns, token_table
from phi3_lsp.tokens import TokenSpan, Word


def rendered(markdown: str) -> tuple[list[str], list[list[str]]]:
    """The inline code outside the table, and the text of each body row's cells."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    outside: list[str] = []
    rows: list[list[str]] = []
    in_body = False
    for token in tokens:
        if token.type in ("tbody_open", "tbody_close"):
            in_body = token.type == "tbody_open"
        elif token.type == "tr_open" and in_body:
            rows.append([])
        elif token.type == "inline":
            text = "".join(child.content for child in token.children or [])
            if in_body:
                rows[-1].append(text)
            else:
                outside.extend(c.content for c in token.children or [] if c.type == "code_inline")
    return outside, rows


@pytest.mark.parametrize(
    ("text", "word", "spans", "shown"),
    [
        (
            "x = a||b",
            Word("||", 5, 7),
            [TokenSpan(11, "||", 5, 7)],
            [["||", "||", "11"]],
        ),
        (
            "say `c` or ``d``",
            Word("``", 11, 13),
            [TokenSpan(13, "Ġ``", 10, 13), TokenSpan(14, "``", 14, 16)],
            [["␣``", "Ġ``", "13"], ["``", "``", "14"]],
        ),
        (
            "grep 'a\\|b'",
            Word("\\|", 7, 9),
            [TokenSpan(16, "\\|", 7, 9)],
            # U+2223 DIVIDES for the pipe: VS Code's Markdown splits a row at "\\|" too.
            [["\\\u2223", "\\\u2223", "16"]],
        ),
        (
            "end`\n\tnext",
            Word("`", 3, 4),
            [TokenSpan(15, "`\n\t", 3, 6)],
            [["`\\n\\t", "`\\n\\t", "15"]],
        ),
    ],
)
def test_each_token_shows_its_text_piece_and_id_in_its_own_row(
    text: str, word: Word, spans: list[TokenSpan], shown: list[list[str]]
) -> None:
    title, rows = rendered(token_table(word, spans, text))
    assert title == [word.text]
    assert rows == shown


def test_the_title_counts_the_tokens() -> None:
    one = token_table(Word("is", 1, 3), [TokenSpan(338, "▁is", 0, 3)], " is")
    assert one.startswith("`is` — 1 token\n")
    two = token_table(Word("ab", 0, 2), [TokenSpan(1, "a", 0, 1), TokenSpan(2, "b", 1, 2)], "ab")
    assert two.startswith("`ab` — 2 tokens\n")


def test_plain_text_lines_up_the_columns_without_markdown() -> None:
    text = "The capital"
    columns = token_columns(Word("capital", 4, 11), [TokenSpan(3575, "Ġcapital", 3, 11)], text)
    assert columns.split("\n") == [
        "capital — 1 token",
        "",
        "text      piece       id",
        "␣capital  Ġcapital  3575",
        "",
    ]


def test_plain_text_columns_count_wide_characters_twice_and_show_line_breaks() -> None:
    text = "我想`\n"
    spans = [TokenSpan(7, "我想", 0, 2), TokenSpan(15, "`\n", 2, 4)]
    columns = token_columns(Word("我想", 0, 2), spans, text)
    assert columns.split("\n") == [
        "我想 — 2 tokens",
        "",
        "text  piece  id",
        "我想  我想    7",
        "`\\n   `\\n    15",
        "",
    ]
