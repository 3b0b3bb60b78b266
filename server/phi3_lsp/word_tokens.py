"""The tokens that cover a word as the whole document tokenizes, from a few lines around it.

Tokenizing a 10,000-line document takes a third of a second or more, too long for a hover after
every keystroke. A word's tokens depend only on text close to it (BPE merges are local, and a
line break stops them), so tokenizing the lines around the word gives the same tokens. That is
checked on every call: a window three times wider must agree, or the caller tokenizes the whole
document after all.

The windows are small because a hover pays for both: over 400 words of a 10,000-line Python
file, with either pack tokenizer, 8 and 32 lines either side took 3.0-3.4 ms a word and 2 and 6
took 0.7 ms. Even 0 and 1 lines gave every word its whole-document tokens there.

A window that begins after whitespace an added token swallows (Phi-3's `<|user|>` takes the
line breaks after it) begins at that token instead, as the document reads no whitespace there.

A window is also cut to a few hundred characters either side of the word, so that a long line
(minified code, a paragraph without breaks) is not tokenized whole: a hover on a line of 240,000
characters took 0.11-0.16 s with windows of whole lines.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from phi3_lsp.text_blocks import Characters
from phi3_lsp.tokens import DocumentTokenizer, TokenSpan

NEAR_LINES = 2
FAR_LINES = 6
NEAR_CHARACTERS = 160
WHITESPACE_CHUNK = 2000
"""Characters read at a time going back over whitespace, for a token that swallows it."""
FAR_CHARACTERS = 491
"""331 characters more than the near window's, a prime: inside a long run of one character or
pattern (`=====…`, base64), tokens repeat every 16 or 32 characters or so from the run's start,
so windows cut inside it a multiple of that apart agree with each other and not with the
document (at 480: 22 % of the cursor positions in runs of 20 patterns got wrong tokens)."""


def tokens_near(
    tokenizer: DocumentTokenizer,
    text: Characters,
    line_starts: Sequence[int],
    start: int,
    end: int,
) -> list[TokenSpan] | None:
    """The tokens overlapping `text[start:end]`, or None when the windows disagree."""
    near = _with_swallowed_whitespace(
        tokenizer, text, _window(text, line_starts, start, end, NEAR_LINES, NEAR_CHARACTERS)
    )
    if near == (0, len(text)):
        return _covering_in_windows(tokenizer, text, [near], start, end)[0]
    far = _with_swallowed_whitespace(
        tokenizer, text, _window(text, line_starts, start, end, FAR_LINES, FAR_CHARACTERS)
    )
    near_tokens, far_tokens = _covering_in_windows(tokenizer, text, [near, far], start, end)
    return near_tokens if near_tokens == far_tokens else None


def _with_swallowed_whitespace(
    tokenizer: DocumentTokenizer, text: Characters, window: tuple[int, int]
) -> tuple[int, int]:
    """`window`, begun at the added token that swallows the whitespace it begins in or just
    after (Phi-3's `<|user|>\n\n…`): the document reads no whitespace there, a window without
    the token would."""
    window_start, window_end = window
    if not tokenizer.right_stripping or window_start == 0:
        return window
    edge = text[window_start - 1 : window_start + 1]
    if edge.strip() == edge:
        return window  # no whitespace on either side of its start
    whitespace_start = _whitespace_start(text, window_start)
    tokens = tokenizer.right_stripping
    before = text[max(0, whitespace_start - max(map(len, tokens))) : whitespace_start]
    swallowing = next((token for token in tokens if before.endswith(token)), None)
    if swallowing is None:
        return window
    return (whitespace_start - len(swallowing), window_end)


def _whitespace_start(text: Characters, offset: int) -> int:
    """Where the whitespace that ends at `offset` begins (`offset` after none), read back a
    chunk at a time: a slice of text blocks costs far less than their characters one by one."""
    start = offset
    while start > 0:
        chunk_start = max(0, start - WHITESPACE_CHUNK)
        kept = text[chunk_start:start].rstrip()
        start = chunk_start + len(kept)
        if kept:
            break
    return start


def _window(
    text: Characters,
    line_starts: Sequence[int],
    start: int,
    end: int,
    lines: int,
    characters: int,
) -> tuple[int, int]:
    """The character range of `lines` lines either side of the lines of `[start, end)`, cut to
    at most `characters` characters either side of `[start, end)`."""
    first_line = bisect.bisect_right(line_starts, start) - 1
    last_line = bisect.bisect_right(line_starts, max(start, end - 1)) - 1
    window_first = max(0, first_line - lines)
    # Unless cut to its characters, the window begins with the line break before its first
    # line: a tokenizer that marks the start of a text (SentencePiece's "▁") then marks the
    # break, not the first word. A cut window begins mid-line, far from the word.
    window_start = line_starts[window_first] - 1 if window_first > 0 else 0
    after_last = last_line + lines + 1
    window_end = line_starts[after_last] if after_last < len(line_starts) else len(text)
    return max(window_start, start - characters), min(window_end, end + characters)


def _covering_in_windows(
    tokenizer: DocumentTokenizer,
    text: Characters,
    windows: Sequence[tuple[int, int]],
    start: int,
    end: int,
) -> list[list[TokenSpan]]:
    """For each window of `text`, the tokens covering `[start, end)` as it tokenizes alone."""
    excerpts = [
        (text[window_start:window_end], start - window_start, end - window_start)
        for window_start, window_end in windows
    ]
    coverings = tokenizer.covering_spans(excerpts)
    return [
        [
            TokenSpan(span.id, span.piece, span.start + window_start, span.end + window_start)
            for span in covering
        ]
        for covering, (window_start, _) in zip(coverings, windows, strict=True)
    ]
