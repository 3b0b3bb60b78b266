"""A text kept in blocks of a few thousand characters, each with its line breaks, so that an edit
costs about its own size rather than the document's.

A Python string cannot change: an edit made a new one, copying the whole document three times,
and moved every later line start one by one. A 50 MB file with characters outside the BMP is a
200 MB string (four bytes a character): 0.25-0.34 s a keystroke. Here an edit makes the one or
two blocks around it again and moves the offsets of the blocks after it (~2,900 for 50 MB); the
other blocks are shared with the text before the edit, which stays whole for whoever still
reads it (a hover waiting on its tokens).

The blocks of a text taken whole are slices of that one string, not copies of it. A block never
ends between "\\r" and "\\n", so each line break lies in one block.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, overload

from phi3_lsp.line_breaks import line_starts

BLOCK_CHARACTERS = 16_384
"""The most characters in a block (one more when that keeps a "\\r\\n" whole)."""


class Characters(Protocol):
    """A text read by character and by slice: a `str`, or `TextBlocks`."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: int | slice, /) -> str: ...


@dataclass(frozen=True)
class _Block:
    """The characters `base[start:end]` and the line breaks among them."""

    base: str
    start: int
    end: int
    breaks: list[int]
    """Offsets in `base` just after each line break in the block: start < offset <= end."""

    @property
    def text(self) -> str:
        return self.base[self.start : self.end]


class TextBlocks:
    """A text in blocks, and where its lines start. It never changes: `replaced` makes the
    edited text, which shares the blocks the edit did not touch."""

    def __init__(self, blocks: list[_Block], offsets: list[int], breaks_before: list[int]) -> None:
        self._blocks = blocks
        self._offsets = offsets
        """Where each block begins in the text."""
        self._breaks_before = breaks_before
        """How many line breaks the blocks before each block hold."""
        last = blocks[-1] if blocks else None
        self._length = 0 if last is None else offsets[-1] + last.end - last.start
        self.line_count = 1 if last is None else 1 + breaks_before[-1] + len(last.breaks)
        """Lines in the text: one more than its line breaks."""

    @classmethod
    def of(cls, text: str) -> TextBlocks:
        """`text` in blocks."""
        blocks = _blocks_of(text)
        return cls(blocks, _offsets_of(blocks, 0), _breaks_before(blocks, 0))

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        """The whole text: a copy of all of it."""
        return "".join(block.text for block in self._blocks)

    def __getitem__(self, key: int | slice, /) -> str:
        """A character or a slice (of step 1), as the same `str` would give it."""
        if isinstance(key, slice):
            start, stop, step = key.indices(self._length)
            if step != 1:
                raise ValueError("a slice of text blocks takes every character")
            return self._slice(start, stop)
        index = key + self._length if key < 0 else key
        if not 0 <= index < self._length:
            raise IndexError("text index out of range")
        return self._slice(index, index + 1)

    def replaced(self, start: int, end: int, new_text: str) -> TextBlocks:
        """The text with `[start, end)` (0 <= start <= end <= len) replaced by `new_text`.

        The blocks from the one holding the character before `start` to the one holding the
        character at `end` are made again: a line break that the edit splits or makes ("\\r"
        brought next to "\\n") lies within them, and the blocks either side do not change.
        """
        blocks, offsets, breaks_before = self._blocks, self._offsets, self._breaks_before
        first = max(0, self._block_at(start - 1))
        last = self._block_at(end) if end < self._length else len(blocks) - 1
        replaced = blocks[first : last + 1]
        region_start = offsets[first] if blocks else 0
        old = "".join(block.text for block in replaced)
        made = _blocks_of(
            "".join((old[: start - region_start], new_text, old[end - region_start :]))
        )
        shift = len(new_text) - (end - start)
        break_shift = sum(len(block.breaks) for block in made) - sum(
            len(block.breaks) for block in replaced
        )
        return TextBlocks(
            [*blocks[:first], *made, *blocks[last + 1 :]],
            [
                *offsets[:first],
                *_offsets_of(made, region_start),
                *[offset + shift for offset in offsets[last + 1 :]],
            ],
            [
                *breaks_before[:first],
                *_breaks_before(made, breaks_before[first] if blocks else 0),
                *[count + break_shift for count in breaks_before[last + 1 :]],
            ],
        )

    def line_start(self, line: int) -> int:
        """Where `line` (0 <= line < line_count) begins."""
        if line == 0:
            return 0
        # The block of the line break before `line`: the last one with fewer breaks before it.
        index = bisect.bisect_right(self._breaks_before, line - 1) - 1
        block = self._blocks[index]
        after_break = block.breaks[line - 1 - self._breaks_before[index]]
        return self._offsets[index] + after_break - block.start

    def line_at(self, offset: int) -> int:
        """The line that holds `offset` (0 <= offset <= len): the line breaks up to it."""
        index = self._block_at(offset)
        if index < 0:
            return 0  # the empty text
        block = self._blocks[index]
        in_base = block.start + offset - self._offsets[index]
        return self._breaks_before[index] + bisect.bisect_right(block.breaks, in_base)

    def line_starts(self) -> Iterator[int]:
        """Where each line begins, in order."""
        yield 0
        for block, offset in zip(self._blocks, self._offsets, strict=True):
            for after_break in block.breaks:
                yield offset + after_break - block.start

    def _block_at(self, offset: int) -> int:
        """The block that holds the character at `offset` (-1 before the first)."""
        return bisect.bisect_right(self._offsets, offset) - 1

    def _slice(self, start: int, stop: int) -> str:
        if start >= stop:
            return ""
        pieces = []
        for index in range(self._block_at(start), self._block_at(stop - 1) + 1):
            block, offset = self._blocks[index], self._offsets[index]
            first = block.start + max(start - offset, 0)
            last = block.start + min(stop - offset, block.end - block.start)
            pieces.append(block.base[first:last])
        return "".join(pieces)


class LineStarts(Sequence[int]):
    """Where each line of a `TextBlocks` begins, read from its blocks: the list that
    `line_breaks.line_starts` makes of the same text, without making it."""

    def __init__(self, text: TextBlocks) -> None:
        self._text = text

    def __len__(self) -> int:
        return self._text.line_count

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index: int | slice) -> int | list[int]:
        if isinstance(index, slice):
            return [self[line] for line in range(*index.indices(len(self)))]
        line = index + len(self) if index < 0 else index
        if not 0 <= line < len(self):
            raise IndexError("line out of range")
        return self._text.line_start(line)

    def __iter__(self) -> Iterator[int]:
        return self._text.line_starts()


def _blocks_of(text: str) -> list[_Block]:
    """`text` cut into blocks of about equal size, at most `BLOCK_CHARACTERS` each."""
    count = -(-len(text) // BLOCK_CHARACTERS)
    if count == 0:
        return []
    size = -(-len(text) // count)
    breaks = line_starts(text)[1:]
    blocks = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if text[end - 1 : end + 1] == "\r\n":
            end += 1
        first, last = bisect.bisect_right(breaks, start), bisect.bisect_right(breaks, end)
        blocks.append(_Block(text, start, end, breaks[first:last]))
        start = end
    return blocks


def _offsets_of(blocks: Sequence[_Block], first: int) -> list[int]:
    """Where each of `blocks` begins, the first at `first`."""
    lengths = (block.end - block.start for block in blocks)
    return list(itertools.accumulate(lengths, initial=first))[:-1]


def _breaks_before(blocks: Sequence[_Block], first: int) -> list[int]:
    """The line breaks before each of `blocks`, `first` before the first."""
    counts = (len(block.breaks) for block in blocks)
    return list(itertools.accumulate(counts, initial=first))[:-1]
