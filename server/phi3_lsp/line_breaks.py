"""Line breaks as LSP counts them: "\\n", "\\r\\n" or a lone "\\r"."""

from __future__ import annotations

import itertools
import re

LINE_BREAK = re.compile(r"\r\n|\r|\n")
"""A line break as LSP counts them: "\\n", "\\r\\n" or a lone "\\r"."""


def line_starts(text: str) -> list[int]:
    """Offsets where each line of `text` begins (the first is always 0)."""
    if "\r" not in text:
        # The common case, 3x faster than the pattern: 0.9 ms for a 10,000-line file, which
        # every first hover on a new version of the document pays.
        lengths = (len(line) + 1 for line in text.split("\n")[:-1])
        return [0, *itertools.accumulate(lengths)]
    return [0, *(match.end() for match in LINE_BREAK.finditer(text))]
