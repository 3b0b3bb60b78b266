"""LSP positions (line, character in code units) ⇄ offsets into a Python string.

LSP counts characters in the code units of the negotiated encoding: UTF-16 unless the client
offers another one. Python strings index code points, so an emoji is one Python character but
two UTF-16 units and four UTF-8 units. Lines end at "\\n", "\\r\\n" or "\\r", as LSP says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from phi3_lsp.text_blocks import LineStarts, TextBlocks

Encoding = Literal["utf-8", "utf-16", "utf-32"]


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
    """A text and where each of its lines starts, for many position conversions.

    The text is kept in blocks (see `text_blocks`), so that an edit costs about its own size.
    Readers of a part of it (a line, the words around a cursor) read `blocks`; `text` is the
    whole text as one string.
    """

    def __init__(self, text: str | TextBlocks) -> None:
        self._text = text if isinstance(text, str) else None
        self.blocks = TextBlocks.of(text) if isinstance(text, str) else text
        self.starts: Sequence[int] = LineStarts(self.blocks)

    @property
    def text(self) -> str:
        """The whole text. After an edit it is joined from the blocks when first read: a copy
        of the whole document (0.1 s for 50 MB)."""
        if self._text is None:
            self._text = str(self.blocks)
        return self._text

    def replaced(self, start: int, end: int, new_text: str) -> LineIndex:
        """The index of the text with `[start, end)` replaced by `new_text`."""
        return LineIndex(self.blocks.replaced(start, end, new_text))

    def offset_at(self, line: int, character: int, encoding: Encoding = "utf-16") -> int | None:
        """The Python offset of an LSP position, or None when `line` is past the last line.

        A `character` past the end of its line means the end of the line (the LSP rule); a
        position inside a multi-unit character rounds down to the start of that character.
        """
        blocks = self.blocks
        if line < 0 or character < 0 or line >= blocks.line_count:
            return None
        start = blocks.line_start(line)
        end = self._line_end(line)
        # `character` units span at most `character` code points.
        candidates = blocks[start : min(end, start + character)]
        return start + _code_points_in(candidates, character, encoding)

    def position_at(self, offset: int, encoding: Encoding = "utf-16") -> tuple[int, int]:
        """The LSP (line, character) of a Python offset; offsets are clamped to the text."""
        blocks = self.blocks
        offset = max(0, min(offset, len(blocks)))
        # An offset between "\r" and "\n" belongs to the line the pair ends.
        line = blocks.line_at(offset)
        start = blocks.line_start(line)
        return line, _units_in(blocks[start : min(offset, self._line_end(line))], encoding)

    def line_after(self, offset: int) -> str:
        """The rest of the line after `offset`, up to its line break."""
        return self.blocks[offset : self._line_end(self.blocks.line_at(offset))]

    def _line_end(self, line: int) -> int:
        """Offset just before the line break that ends `line` (or the end of the text)."""
        blocks = self.blocks
        if line + 1 < blocks.line_count:
            end = blocks.line_start(line + 1)
            if blocks[end - 2 : end] == "\r\n":
                return end - 2
            return end - 1
        return len(blocks)
