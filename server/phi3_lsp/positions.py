"""LSP positions (line, character in code units) ⇄ offsets into a Python string.

LSP counts characters in the code units of the negotiated encoding: UTF-16 unless the client
offers another one. Python strings index code points, so an emoji is one Python character but
two UTF-16 units and four UTF-8 units. Lines end at "\\n", "\\r\\n" or "\\r", as LSP says.
"""

from __future__ import annotations

import bisect
from typing import Literal

from phi3_lsp.line_breaks import LINE_BREAK, line_starts

Encoding = Literal["utf-8", "utf-16", "utf-32"]


def line_after(text: str, offset: int) -> str:
    """The rest of the line after `offset` in `text`, up to its line break."""
    line_break = LINE_BREAK.search(text, offset)
    return text[offset : line_break.start() if line_break else None]


def _line_end(text: str, starts: list[int], line: int) -> int:
    """Offset just before the line break that ends `line` (or the end of the text)."""
    if line + 1 < len(starts):
        end = starts[line + 1]
        if text[end - 2 : end] == "\r\n":
            return end - 2
        return end - 1
    return len(text)


# The codec whose bytes count an encoding's code units, and the bytes in one unit.
_CODECS: dict[Encoding, tuple[str, int]] = {"utf-8": ("utf-8", 1), "utf-16": ("utf-16-le", 2)}


def _units_in(segment: str, encoding: Encoding) -> int:
    """How many code units `segment` takes in `encoding`."""
    if encoding == "utf-32":
        return len(segment)
    codec, unit_bytes = _CODECS[encoding]
    # "surrogatepass": a lone surrogate (JSON can carry one) counts as the one UTF-16 unit it is.
    return len(segment.encode(codec, "surrogatepass")) // unit_bytes


def _code_points_in(segment: str, units: int, encoding: Encoding) -> int:
    """How many whole code points of `segment` its first `units` code units hold."""
    if encoding == "utf-32":
        return min(units, len(segment))
    codec, unit_bytes = _CODECS[encoding]
    try:
        encoded = segment.encode(codec)
    except UnicodeEncodeError:  # a lone surrogate, which no codec writes: count one by one
        counted = 0
        for code_points, char in enumerate(segment):
            counted += _units_in(char, encoding)
            if counted > units:
                return code_points
        return len(segment)
    # Cut the bytes after `units` units: "ignore" drops a character cut in two, so a position
    # inside a multi-unit character rounds down to its start. Encoding and decoding run in C:
    # a Python loop over a line of 240,000 characters took ~25 ms.
    return len(encoded[: units * unit_bytes].decode(codec, "ignore"))


class LineIndex:
    """Where each line of a text starts, computed once, for many position conversions."""

    def __init__(self, text: str, starts: list[int] | None = None) -> None:
        self.text = text
        self.starts = line_starts(text) if starts is None else starts

    def replaced(self, start: int, end: int, new_text: str) -> LineIndex:
        """The index of the text with `[start, end)` replaced by `new_text`.

        Faster than indexing the new text when it has no "\\r" (a "\\r\\n" pair could be
        split or joined by the edit): lines before the edit keep their starts, lines after it
        move, and only the new text is searched for line breaks.
        """
        text = self.text[:start] + new_text + self.text[end:]
        if "\r" in text:
            return LineIndex(text)
        starts = self.starts
        shift = len(new_text) - (end - start)
        inserted = [start + match.end() for match in LINE_BREAK.finditer(new_text)]
        moved = [line_start + shift for line_start in starts[bisect.bisect_right(starts, end) :]]
        return LineIndex(text, starts[: bisect.bisect_right(starts, start)] + inserted + moved)

    def offset_at(self, line: int, character: int, encoding: Encoding = "utf-16") -> int | None:
        """The Python offset of an LSP position, or None when `line` is past the last line.

        A `character` past the end of its line means the end of the line (the LSP rule); a
        position inside a multi-unit character rounds down to the start of that character.
        """
        text, starts = self.text, self.starts
        if line < 0 or character < 0 or line >= len(starts):
            return None
        start = starts[line]
        end = _line_end(text, starts, line)
        # `character` units span at most `character` code points.
        candidates = text[start : min(end, start + character)]
        return start + _code_points_in(candidates, character, encoding)

    def position_at(self, offset: int, encoding: Encoding = "utf-16") -> tuple[int, int]:
        """The LSP (line, character) of a Python offset; offsets are clamped to the text."""
        text, starts = self.text, self.starts
        offset = max(0, min(offset, len(text)))
        line = bisect.bisect_right(starts, offset) - 1
        start = starts[line]
        # An offset between "\r" and "\n" belongs to the line the pair ends.
        line_end = _line_end(text, starts, line)
        return line, _units_in(text[start : min(offset, line_end)], encoding)
