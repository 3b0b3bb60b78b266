"""Completion logic without LSP or torch: the prompt, its token budget, the tidy-up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Characters per token tried for the window cut from the document before tokenizing it, so
# long documents are never tokenized whole: typical text and code first (~3-4 per token), then
# a generous bound for text with long tokens (runs of spaces, long identifiers).
_CHARS_PER_TOKEN_TRIES = (8, 32)


class _Span(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def start(self) -> int: ...


class PromptTokenizer(Protocol):
    """What prompt building needs from a tokenizer (tokens.DocumentTokenizer has it)."""

    def token_spans(self, text: str) -> Sequence[_Span]: ...

    def encode_prompt(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class Prompt:
    """The token ids sent to the model and the tail of the document they stand for."""

    ids: list[int]
    text: str


def prompt_budget(context_tokens: int, model_context: int, max_new_tokens: int) -> int:
    """Prompt tokens allowed: the user's budget, and room for the continuation in the context."""
    return max(1, min(context_tokens, model_context - max_new_tokens))


def has_text_to_continue(text_before_cursor: str) -> bool:
    """False when there is nothing but whitespace before the cursor: no context to continue."""
    return bool(text_before_cursor.strip())


def build_prompt(tokenizer: PromptTokenizer, text_before_cursor: str, budget: int) -> Prompt:
    """The last tokens of the text before the cursor, after the model's special tokens (BOS).

    The tokens are the document's own, as tokenized in context: re-encoding a cut-out piece
    would tokenize its first word differently (SentencePiece would add a lone "▁" before
    " capital"). Special tokens count against `budget`.
    """
    specials = tokenizer.encode_prompt("")
    room = max(0, budget - len(specials))
    for chars_per_token in _CHARS_PER_TOKEN_TRIES:
        window_start = max(0, len(text_before_cursor) - room * chars_per_token)
        window = text_before_cursor[window_start:]
        spans = tokenizer.token_spans(window)
        # When the window was cut by characters, its first token may be a fragment of a word.
        first = 1 if window_start > 0 else 0
        if len(spans) - first >= room or window_start == 0:
            break
    tail = spans[max(first, len(spans) - room) :]
    text = window[tail[0].start :] if tail else ""
    return Prompt(ids=[*specials, *(span.id for span in tail)], text=text)


def tidy_continuation(text: str) -> str:
    """What is worth showing of a continuation: "" when it adds nothing but whitespace.

    A replacement character at the end is half of a multi-byte character cut by the token
    limit; trailing whitespace would move the cursor past where the text ends.
    """
    text = text.rstrip("\ufffd").rstrip()
    return text if text.strip() else ""
