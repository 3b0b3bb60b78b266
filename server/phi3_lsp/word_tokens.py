"""The tokens that cover a word as the whole document tokenizes, from a few lines around it.

Tokenizing a 10,000-line document takes a third of a second or more, too long for a hover after
every keystroke. A word's tokens depend only on text close to it (BPE merges are local, and a
line break stops them), so tokenizing the lines around the word gives the same tokens. That is
checked on every call: a window four times wider must agree, or the caller tokenizes the whole
document after all.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from phi3_lsp.tokens import DocumentTokenizer, TokenSpan, tokens_covering

NEAR_LINES = 8
FAR_LINES = 32


def tokens_near(
    tokenizer: DocumentTokenizer, text: str, line_starts: Sequence[int], start: int, end: int
) -> list[TokenSpan] | None:
    """The tokens overlapping `text[start:end]`, or None when the windows disagree."""
    near, whole = _covering_in_window(tokenizer, text, line_starts, start, end, NEAR_LINES)
    if whole:
        return near
    far, _ = _covering_in_window(tokenizer, text, line_starts, start, end, FAR_LINES)
    return near if near == far else None


def _covering_in_window(
    tokenizer: DocumentTokenizer,
    text: str,
    line_starts: Sequence[int],
    start: int,
    end: int,
    radius: int,
) -> tuple[list[TokenSpan], bool]:
    """Tokens covering `[start, end)` in `radius` lines either side; and whether that is all."""
    first_line = bisect.bisect_right(line_starts, start) - 1
    last_line = bisect.bisect_right(line_starts, max(start, end - 1)) - 1
    window_first = max(0, first_line - radius)
    # The window begins with the line break before its first line: a tokenizer that marks the
    # start of a text (SentencePiece's "▁") then marks the break, not the first word.
    window_start = line_starts[window_first] - 1 if window_first > 0 else 0
    after_last = last_line + radius + 1
    window_end = line_starts[after_last] if after_last < len(line_starts) else len(text)
    spans = tokenizer.token_spans(text[window_start:window_end])
    covering = [
        TokenSpan(span.id, span.piece, span.start + window_start, span.end + window_start)
        for span in tokens_covering(spans, start - window_start, end - window_start)
    ]
    return covering, window_start == 0 and window_end == len(text)
