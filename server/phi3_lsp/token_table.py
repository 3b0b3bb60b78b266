"""A hover's text: the tokens of a word, one row per token, as a Markdown table or as plain
text in columns (for clients that show no Markdown)."""

from __future__ import annotations

import re
import unicodedata

from phi3_lsp.text_blocks import Characters
from phi3_lsp.tokens import TokenSpan, Word

_BACKTICKS = re.compile("`+")
_PIPE_AFTER_BACKSLASH = re.compile(r"(?<=\\)\|")
PIPE_STAND_IN = "\u2223"  # DIVIDES, which looks like "|"


def token_table(word: Word, spans: list[TokenSpan], text: Characters) -> str:
    """Markdown: the word, then one `text | piece | id` row per token.

    `text` is what the token covers in the document, spaces shown as "␣", and empty for one
    the tokenizer added (see `tokens_covering`); `piece` is the vocabulary entry itself (e.g.
    "▁capital" or "Ġcapital", whose first character marks a space).
    """
    rows = "\n".join(
        f"| {_text_cell(text[span.start : span.end])} | {_cell(span.piece)} | {span.id} |"
        for span in spans
    )
    header = "| text | piece | id |\n|---|---|---:|"
    return f"{_code(word.text)} — {_count(spans)}\n\n{header}\n{rows}\n"


def token_columns(word: Word, spans: list[TokenSpan], text: Characters) -> str:
    """Plain text: what `token_table` says, in columns lined up with spaces.

    No Markdown syntax: a client that shows hovers as plain text would show the table's pipes
    and the backticks as they are.
    """
    rows = [("text", "piece", "id")] + [
        (
            _visible(text[span.start : span.end].replace(" ", "␣")),
            _visible(span.piece),
            str(span.id),
        )
        for span in spans
    ]
    text_width = max(_width(row[0]) for row in rows)
    piece_width = max(_width(row[1]) for row in rows)
    id_width = max(len(row[2]) for row in rows)
    lines = [
        f"{_padded(shown, text_width)}  {_padded(piece, piece_width)}  {number.rjust(id_width)}"
        for shown, piece, number in rows
    ]
    return f"{_visible(word.text)} — {_count(spans)}\n\n" + "\n".join(lines) + "\n"


def _count(spans: list[TokenSpan]) -> str:
    return f"{len(spans)} token" + ("" if len(spans) == 1 else "s")


def _padded(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _width(text: str) -> int:
    """Columns `text` takes in a terminal: two for a wide (CJK) character, none for a mark."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )


def _visible(text: str) -> str:
    """`text` with line breaks and tabs shown as escapes."""
    return text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _text_cell(covered: str) -> str:
    """The cell of the text a token covers: none for a token the tokenizer added."""
    return _cell(covered.replace(" ", "␣")) if covered else ""


def _cell(text: str) -> str:
    """`text` as inline code in a table cell: a pipe would end the cell unless escaped (GFM).

    VS Code's hover renderer (marked) takes a pipe after an even number of backslashes for the
    end of a cell: one that follows a backslash of the text (`a\\|b`) is shown as
    `PIPE_STAND_IN`.
    """
    return _code(_PIPE_AFTER_BACKSLASH.sub(PIPE_STAND_IN, text)).replace("|", "\\|")


def _code(text: str) -> str:
    """`text` as inline code, line breaks and tabs shown as escapes.

    The fence is one backtick longer than any run of backticks inside, so that "``" shows as
    itself rather than ending the span; a space either side, which Markdown drops, keeps a
    backtick at either end apart from the fence.
    """
    visible = _visible(text)
    longest_run = max((len(run) for run in _BACKTICKS.findall(visible)), default=0)
    fence = "`" * (longest_run + 1)
    return f"{fence} {visible} {fence}" if longest_run else f"{fence}{visible}{fence}"
