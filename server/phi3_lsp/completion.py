"""Completion logic without LSP or torch: the prompt, its token budget, the tidy-up."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Protocol

from phi3_lsp.line_breaks import LINE_BREAK
from phi3_lsp.tokens import TokenStarts

# Characters per token tried for the window cut from the document before tokenizing it, so
# long documents are never tokenized whole: typical text and code first (~3-4 per token), then
# a generous bound for text with long tokens (runs of spaces, long identifiers).
_CHARS_PER_TOKEN_TRIES = (8, 32)


class PromptTokenizer(Protocol):
    """What prompt building needs from a tokenizer (tokens.DocumentTokenizer has it)."""

    def token_starts(self, text: str) -> TokenStarts: ...

    def encode_prompt(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class Prompt:
    """The token ids sent to the model and the tail of the document they stand for."""

    ids: list[int]
    text: str


def prompt_budget(context_tokens: int, model_context: int, max_new_tokens: int) -> int:
    """Prompt tokens allowed: the user's budget, and room for the continuation in the context.

    A context of less than twice maxNewTokens still gives the prompt half of it: a prompt of
    the special tokens alone would continue nothing of the document.
    """
    room = max(model_context - max_new_tokens, model_context // 2)
    return max(1, min(context_tokens, room))


def new_token_limit(max_new_tokens: int, model_context: int, prompt_tokens: int) -> int:
    """New tokens a completion asks for: the user's limit, or what the context leaves after the
    prompt where that is less (a small context, see `prompt_budget`: a shorter answer beats
    none)."""
    return max(1, min(max_new_tokens, model_context - prompt_tokens))


def has_text_to_continue(text_before_cursor: str) -> bool:
    """False when there is nothing but whitespace before the cursor: no context to continue."""
    return bool(text_before_cursor.strip())


def prompt_text_start(cursor: int, budget: int) -> int:
    """Where the part of the text before a cursor at document offset `cursor` that a prompt of
    at most `budget` tokens can use begins (see `build_prompt`, which reads at most `budget`
    times the widest characters per token it tries, and the character before them).

    A completion copies only that part: the whole of it was 0.1 s of the event loop at the end
    of a 50 MB file. The start is a multiple of that reach, so that it stays put while the user
    types at the end: the text before the cursor then only grows, as `SuggestionCache` expects.
    """
    reach = budget * _CHARS_PER_TOKEN_TRIES[-1] + 1
    return max(0, (cursor - reach) // reach * reach)


def build_prompt(
    tokenizer: PromptTokenizer, text_before_cursor: str, budget: int, start: int = 0
) -> Prompt:
    """The tokens of the text before the cursor that fit `budget`, after the model's special
    tokens (BOS).

    The tokens are the document's own, as tokenized in context: re-encoding a cut-out piece
    would tokenize its first word differently (SentencePiece would add a lone "▁" before
    " capital"). Special tokens count against `budget`.

    A text too long for the budget is cut at a line start chosen from a fixed grid of document
    offsets (see `_anchor`), not just before the last tokens that fit: the prompt then keeps its
    first tokens while the user types, so the model reuses its cached keys and values instead
    of computing the whole prompt again on every keystroke.

    `text_before_cursor` may be the text from document offset `start` on only, no later than
    `prompt_text_start` says: the prompt is the one the whole text before the cursor gives.
    """
    specials = tokenizer.encode_prompt("")
    room = max(0, budget - len(specials))
    cursor = start + len(text_before_cursor)
    for chars_per_token in _CHARS_PER_TOKEN_TRIES:
        window_start = max(0, cursor - room * chars_per_token)  # a document offset
        assert window_start >= start, "the text before the cursor begins too late"
        window = text_before_cursor[window_start - start :]
        tokens = tokenizer.token_starts(window)
        # When the window was cut by characters, its first token may be a fragment of a word.
        first = 1 if window_start > 0 else 0
        if len(tokens.ids) - first >= room or window_start == 0:
            break
    starts = tokens.starts
    first_kept = max(first, len(starts) - room)
    if 0 < first_kept < len(starts):
        earliest = window_start + starts[first_kept]
        anchor = _stable_cut(text_before_cursor, earliest, room, start)
        # Starts never decrease (byte tokens of one character share theirs).
        first_kept = bisect.bisect_left(starts, anchor - window_start, lo=first_kept)
    text = window[starts[first_kept] :] if first_kept < len(starts) else ""
    return Prompt(ids=[*specials, *tokens.ids[first_kept:]], text=text)


def _stable_cut(text: str, earliest: int, room: int, start: int) -> int:
    """`_anchor` on slots of `room` characters, or of half as many as often as it takes for the
    cut to keep at least half of the text that fits (from `earliest` to the end).

    A slot of `room` characters suits text of several characters per token (code, English):
    it moves least while the user types. Where a character is about a token (Chinese,
    Japanese, digits, Cyrillic), that slot is as long as all the text that fits, and a cut at
    its far end would keep next to nothing.
    """
    most = earliest + (start + len(text) - earliest) // 2
    step = max(1, room)
    anchor = _anchor(text, earliest, step, start)
    while anchor > most and step > 1:
        step //= 2
        anchor = _anchor(text, earliest, step, start)
    return anchor  # a slot of 1 cuts at `earliest` itself


def _anchor(text: str, earliest: int, step: int, start: int = 0) -> int:
    """Where to cut a text whose tokens fit from offset `earliest` on: the first line start in
    the first slot of `step` characters (slots start at multiples of `step`) at or after
    `earliest`, or the slot's start when no line starts in it.

    Typing at the end moves `earliest` forward a token at a time, but the cut stays put until
    `earliest` passes into the next slot, i.e. for about `step` typed characters.

    `text` begins at document offset `start`; the offsets taken and returned are the document's.
    """
    slot = -(-earliest // step) * step  # the first multiple of `step` at or after `earliest`
    if slot == 0:
        return 0
    end = min(slot + step, start + len(text))
    # The first line that starts in the slot (a "\r\n" at its end is searched whole).
    line_break = LINE_BREAK.search(text, slot - 1 - start, end - start)
    if line_break is not None and start + line_break.end() < end:
        return start + line_break.end()
    return slot


def in_middle_of_line(rest_of_line: str) -> bool:
    """True when the text after the cursor on its line (`LineIndex.line_after`) is more than
    whitespace: a suggestion there is one line (see `fit_to_line`)."""
    return bool(rest_of_line.strip())


def fit_to_line(continuation: str, rest_of_line: str) -> str:
    """What of a continuation goes before `rest_of_line`, the text after the cursor on its line.

    At the end of a line, all of it. In the middle of one, only its first line: a line break
    would push the rest of the line below the suggestion. The model never sees that rest, so a
    first line that ends with it ("a, b)" before ")") would type it twice: that ending goes.
    """
    if not in_middle_of_line(rest_of_line):
        return continuation
    first_line = LINE_BREAK.split(continuation, maxsplit=1)[0].rstrip()
    return first_line.removesuffix(rest_of_line.strip())


def complete_lines(continuation: str) -> str:
    """The continuation up to its last line break after visible text; "" if it has none yet.

    A line break before any visible text only ends the cursor's own line.
    """
    first_visible = len(continuation) - len(continuation.lstrip())
    last_break = max(continuation.rfind("\n"), continuation.rfind("\r"))
    return continuation[: last_break + 1] if last_break >= first_visible else ""


def lines_to_show(continuation: str, *, finished: bool) -> str:
    """The part of a continuation worth showing while the model may still add to it.

    A finished continuation is shown whole. While it grows, its last line may end anywhere (in
    the middle of a word or a number), so only its complete lines are shown. A first line that
    is not complete yet is shown as it is.
    """
    if finished:
        return continuation
    return complete_lines(continuation) or continuation


def tidy_continuation(text: str) -> str:
    """What is worth showing of a continuation: "" when it adds nothing but whitespace.

    A replacement character at the end is half of a multi-byte character cut by the token
    limit; trailing whitespace would move the cursor past where the text ends.
    """
    text = text.rstrip("\ufffd").rstrip()
    return text if text.strip() else ""
