"""The text as it would be with the item selected in an editor's completion list applied.

While its completion list is open, an LSP 3.18 client sends that list's selected item (the range
it would replace and its text) with an inline completion request, and shows a suggestion only if
it extends the item's text over the same range (VS Code drops any other while the list is open).
The suggestion is then the continuation of the text with the item in place. No LSP here.
"""

from __future__ import annotations

from dataclasses import dataclass

from phi3_lsp.positions import Encoding, LineIndex

Position = tuple[int, int]
"""An LSP position: (line, character in the encoding's code units)."""


@dataclass(frozen=True)
class AppliedItem:
    """A text with a completion item applied, and the cursor after the item."""

    lines: LineIndex
    """The text with the item's text in place of its range."""
    cursor: int
    """Where the cursor is once the item is applied: just after its text."""


def apply_selected_item(
    lines: LineIndex,
    cursor: int,
    start: Position,
    end: Position,
    text: str,
    encoding: Encoding,
) -> AppliedItem | None:
    """`lines` with `text` in place of the range from `start` to `end`; what follows the range
    stays after the cursor. `cursor` is the cursor's offset in `lines`.

    A character past the end of its line means the end of the line, as for any position. The
    text may have line breaks (a completion item's edit may). None when the item cannot be
    applied: the range is not on the cursor's line alone (LSP asks that of a completion item's
    edit), ends before it starts, or does not hold the cursor.
    """
    cursor_line, _ = lines.position_at(cursor, encoding)
    if start[0] != cursor_line or end[0] != cursor_line or start > end:
        return None
    start_offset = lines.offset_at(*start, encoding)
    end_offset = lines.offset_at(*end, encoding)
    if start_offset is None or end_offset is None or not start_offset <= cursor <= end_offset:
        return None
    return AppliedItem(lines.replaced(start_offset, end_offset, text), start_offset + len(text))
