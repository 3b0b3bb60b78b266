"""A word's tokens from the lines around it are the tokens the whole document gives it."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from phi3_lsp.line_breaks import line_starts
from phi3_lsp.tokens import DocumentTokenizer, TokenSpan, Word, tokens_covering, word_at
from phi3_lsp.word_tokens import FAR_CHARACTERS, NEAR_LINES, tokens_near

# Real source with indentation, blank lines, strings and comments, plus lines that byte-level
# and SentencePiece tokenizers split in unusual ways.
DOCUMENT = "\n".join(
    [
        *Path(argparse.__file__).read_text(encoding="utf-8").splitlines()[:300],
        "naïve café — 🙂 emoji 😶 and    runs   of   spaces",
        "\t\ttabs\r\nand a carriage return",
        "",
        "",
        "last line without a newline",
    ]
)


WORDS = re.compile(r"\w+|[^\w\s]+")


@pytest.fixture(params=["phi3_mini_dir", "smollm2_dir"])
def tokenizer(request: pytest.FixtureRequest) -> DocumentTokenizer:
    folder: Path = request.getfixturevalue(request.param)
    return DocumentTokenizer.from_dir(folder)


def words_in(text: str) -> list[Word]:
    """Each run of word characters, and each run of punctuation."""
    return [Word(match.group(), match.start(), match.end()) for match in WORDS.finditer(text)]


def share_of_words_answered_near(
    tokenizer: DocumentTokenizer, text: str, words: Sequence[Word]
) -> float:
    """The share of `words` the windows answer; each answer must be the whole text's tokens."""
    whole = tokenizer.token_spans(text)
    starts = line_starts(text)
    agreed = 0
    for word in words:
        near = tokens_near(tokenizer, text, starts, word.start, word.end)
        if near is not None:
            assert near == tokens_covering(whole, word.start, word.end), word
            agreed += 1
    return agreed / len(words)


def test_every_word_gets_the_tokens_of_the_whole_document(tokenizer: DocumentTokenizer) -> None:
    words = words_in(DOCUMENT)
    assert len(words) > 1000
    # The windows answer nearly always; the whole document is the rare fallback.
    assert share_of_words_answered_near(tokenizer, DOCUMENT, words) > 0.99


def test_a_short_document_is_tokenized_whole(tokenizer: DocumentTokenizer) -> None:
    text = "\n".join(["The capital of France is"] * (NEAR_LINES - 1))
    start = text.rindex("France")
    near = tokens_near(tokenizer, text, line_starts(text), start, start + len("France"))
    whole = tokens_covering(tokenizer.token_spans(text), start, start + len("France"))
    assert near == whole


def test_a_word_in_a_long_line_is_tokenized_from_the_characters_around_it(
    tokenizer: DocumentTokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Minified code: the whole source on one line of ~100,000 characters.
    line = " ".join(Path(argparse.__file__).read_text(encoding="utf-8").split())
    text = f"# minified\n{line}\n"
    excerpt_lengths: list[int] = []
    covering_spans = tokenizer.covering_spans

    def recording_covering_spans(
        excerpts: Sequence[tuple[str, int, int]],
    ) -> list[list[TokenSpan]]:
        excerpt_lengths.extend(len(excerpt) for excerpt, _, _ in excerpts)
        return covering_spans(excerpts)

    monkeypatch.setattr(tokenizer, "covering_spans", recording_covering_spans)
    words = words_in(text)[::25]
    assert len(words) > 500
    assert share_of_words_answered_near(tokenizer, text, words) > 0.99
    # No window held more than the characters around its word, never the 100,000 of the line.
    longest_word = max(len(word.text) for word in words)
    assert max(excerpt_lengths) <= 2 * FAR_CHARACTERS + longest_word


@pytest.mark.parametrize(
    "text",
    [
        "=" * 1000,
        "-" * 300,
        "data:application/octet-stream;base64," + "A" * 600 + "==",
        "ab" * 500,
    ],
    ids=["equals", "dashes", "base64", "pairs"],
)
def test_a_long_run_of_one_pattern_gets_the_tokens_of_the_whole_document(
    tokenizer: DocumentTokenizer, text: str
) -> None:
    # Inside a run, the tokens repeat every 16 or 32 characters from the run's start: windows
    # cut inside it a multiple of that apart agree with each other, not with the document.
    words = [word_at(text, offset) for offset in range(len(text))]
    share_of_words_answered_near(tokenizer, text, [word for word in words if word is not None])


@pytest.mark.parametrize(
    "blank",
    ["\n" * 3, "\n" * 7, "\n" * 10, "\n" * 2500, " " * 600, "\n \t\n" * 30],
    ids=["3 line breaks", "7 line breaks", "10 line breaks", "2500", "600 spaces", "mixed"],
)
def test_a_word_after_whitespace_a_chat_token_swallows_gets_the_documents_tokens(
    tokenizer: DocumentTokenizer, blank: str
) -> None:
    # Phi-3's <|user|> swallows the whitespace after it: a window that begins within that
    # whitespace, or just after the token, reads it where the document does not.
    text = f"<|user|>{blank}The capital of France is?<|end|>{blank}<|assistant|>{blank}Paris."
    # The words of the text, not those inside the chat tokens' names.
    words = [word for word in words_in(text) if word.text in ("The", "capital", "France", "Paris")]
    # Each from the windows: the whole document is the rare fallback, not this one.
    assert share_of_words_answered_near(tokenizer, text, words) == 1.0


def test_a_word_after_a_long_blank_run_is_answered_from_the_windows(
    tokenizer: DocumentTokenizer,
) -> None:
    code = "def f():\n    return 1\n" * 20
    text = f"{code}{chr(10) * 2500}The answer\n{code}"
    assert share_of_words_answered_near(tokenizer, text, words_in(text)) == 1.0
