"""A model's tokenizer as a document sees it: token ids with character offsets, prompts, decoding.

Pure and light: only the Rust `tokenizers` library (no torch, no transformers), so hovers work
the moment `tokenizer.json` is on disk, long before any weights load.
Offsets are indices into the Python string (code points); LSP's UTF-16 positions are converted
elsewhere.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from tokenizers import Encoding, Tokenizer

from phi3_lsp.errors import ModelSourceError
from phi3_lsp.text_blocks import Characters

# SentencePiece's visible space. Tokenizers that prepend it to the text ("▁The") produce a
# first token that may stand for nothing in the document.
METASPACE = "\u2581"
REPLACEMENT_CHARACTER = "\ufffd"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _tokenizable(text: str) -> str:
    """`text` with each lone surrogate (JSON lets an editor send one) as U+FFFD, which the
    tokenizer takes; one character for one, so that offsets stay those of `text`."""
    if _LONE_SURROGATE.search(text) is None:
        return text
    return _LONE_SURROGATE.sub(REPLACEMENT_CHARACTER, text)


@dataclass(frozen=True)
class TokenSpan:
    """One token of a document: its id, its vocabulary piece, and the characters it covers."""

    id: int
    piece: str
    start: int
    end: int


@dataclass(frozen=True)
class TokenStarts:
    """A text's token ids and where each token starts in it: `token_spans` without the rest."""

    ids: list[int]
    starts: list[int]


@dataclass(frozen=True)
class Word:
    """A run of characters under the cursor, with its offsets in the text."""

    text: str
    start: int
    end: int


class DocumentTokenizer:
    """Tokenize documents with offsets, encode prompts and decode continuations."""

    def __init__(self, tokenizer: Tokenizer, *, eos_tokens: Iterable[str] = ()) -> None:
        self._tokenizer = tokenizer
        added = tokenizer.get_added_tokens_decoder()
        # An added token that strips the whitespace beside it (Phi-3's chat tokens) comes out
        # of an encoding with that whitespace: its piece is still its vocabulary entry.
        self._stripping_pieces = {
            token_id: token.content
            for token_id, token in added.items()
            if token.lstrip or token.rstrip
        }
        self.right_stripping: tuple[str, ...] = tuple(
            token.content for token in added.values() if token.rstrip
        )
        """Added tokens that swallow the whitespace after them (Phi-3's chat tokens)."""
        eos_ids = (tokenizer.token_to_id(token) for token in eos_tokens)
        self.eos_token_ids: frozenset[int] = frozenset(i for i in eos_ids if i is not None)

    @classmethod
    def from_dir(cls, path: Path) -> DocumentTokenizer:
        """Load `tokenizer.json` (and the EOS token from `tokenizer_config.json`) from a folder.

        Raises ModelSourceError, which names the file, when either cannot be read.
        """
        tokenizer_file = path / "tokenizer.json"
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as error:  # tokenizers raises a bare Exception for a malformed file
            raise _unreadable(tokenizer_file, error) from error
        config_file = path / "tokenizer_config.json"
        config: dict[str, Any] = {}
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise _unreadable(config_file, error) from error
        eos = _token_content(config.get("eos_token"))
        return cls(tokenizer, eos_tokens=[eos] if eos else [])

    @property
    def id_count(self) -> int:
        """How many ids it gives, its added tokens' among them: ids 0 to `id_count - 1`."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def piece(self, token_id: int) -> str | None:
        """The vocabulary entry of an id (e.g. "▁Paris", "<0x0A>", "Ġthe"), or None if unknown."""
        return self._tokenizer.id_to_token(token_id)

    def token_spans(self, text: str) -> list[TokenSpan]:
        """Tokenize `text` as the model would see it, without special tokens, with char offsets.

        Every span lies inside the text and spans are ordered. Several byte-fallback tokens of one
        character (e.g. an emoji as `<0xF0><0x9F>...`) share that character's span; a prefix space
        the tokenizer adds by itself (the lone "▁" before "😶") gets an empty span.
        """
        encoding = self._encode(text, add_special_tokens=False)
        return list(_EncodedSpans(encoding, text, self._stripping_pieces))

    def token_starts(self, text: str) -> TokenStarts:
        """The ids and start offsets of `token_spans(text)`, in a fraction of its time.

        A prompt is cut by start offsets alone, and making a `TokenSpan` per token holds the
        GIL (~15 ms for 2,000 tokens) while the event loop waits to answer a hover.
        """
        encoding = self._encode(text, add_special_tokens=False)
        # `_drop_added_prefix` only ever moves a span's end: the starts are the encoding's own.
        return TokenStarts(encoding.ids, [start for start, _ in encoding.offsets])

    def covering_spans(self, excerpts: Sequence[tuple[str, int, int]]) -> list[list[TokenSpan]]:
        """For each `(text, start, end)`: `tokens_covering(self.token_spans(text), start, end)`.

        Faster for a hover: the texts are tokenized in one call, and spans are made only for
        the few tokens that cover the range, not for every token of the text.
        """
        encodings: list[Encoding] = self._tokenizer.encode_batch(
            [_tokenizable(text) for text, _, _ in excerpts], add_special_tokens=False
        )
        return [
            tokens_covering(_EncodedSpans(encoding, text, self._stripping_pieces), start, end)
            for encoding, (text, start, end) in zip(encodings, excerpts, strict=True)
        ]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens."""
        ids: list[int] = self._encode(text, add_special_tokens=False).ids
        return ids

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of `text` with the model's usual special tokens (e.g. BOS for Phi-3)."""
        ids: list[int] = self._encode(text, add_special_tokens=True).ids
        return ids

    def _encode(self, text: str, *, add_special_tokens: bool) -> Encoding:
        # `encode_batch` releases the GIL while it tokenizes and `encode` does not: tokenizing a
        # prompt on a worker thread (~10 ms for 16,000 characters) would otherwise stall the
        # event loop, and a hover sent just after a completion request with it.
        encodings: list[Encoding] = self._tokenizer.encode_batch(
            [_tokenizable(text)], add_special_tokens=add_special_tokens
        )
        return encodings[0]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` on their own, special tokens dropped."""
        text: str = self._tokenizer.decode(list(ids), skip_special_tokens=True)
        return text

    def decode_continuation(self, prompt_ids: Sequence[int], new_ids: Sequence[int]) -> str:
        """The text that `new_ids` add after `prompt_ids`, with its leading space if any.

        Decoding `new_ids` alone loses a leading space in SentencePiece tokenizers (their
        decoder strips the first one: `[3681]` is "Paris" while after "is" it adds " Paris"),
        so the last prompt token is decoded as an anchor and its text removed again.
        """
        if not new_ids:
            return ""
        if not prompt_ids:
            return self.decode(new_ids)
        anchor = self.decode(prompt_ids[-1:])
        joined = self.decode([prompt_ids[-1], *new_ids])
        if joined.startswith(anchor):
            return joined[len(anchor) :]
        # Decoders whose output for the anchor changes with what follows: no anchor then.
        return self.decode(new_ids)

    def stream(self, prompt_ids: Sequence[int]) -> ContinuationStream:
        """An incremental decoder for the tokens that follow `prompt_ids`."""
        return ContinuationStream(self, prompt_ids)


class ContinuationStream:
    """Turns generated ids into text as they arrive, never emitting half a character.

    A character split over several byte tokens (an emoji as four `<0x..>` tokens, or byte-level
    BPE pieces) decodes to U+FFFD until its last byte arrives, so trailing U+FFFD are held back
    until a later token completes the character (or `finish` gives up on it).
    """

    def __init__(self, tokenizer: DocumentTokenizer, prompt_ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        self._prompt_ids = list(prompt_ids[-1:])
        self._new_ids: list[int] = []
        self._emitted = ""

    @property
    def text(self) -> str:
        """All text emitted so far."""
        return self._emitted

    def push(self, token_id: int) -> str:
        """Add one generated id; return the text it completes (possibly "")."""
        self._new_ids.append(token_id)
        decoded = self._tokenizer.decode_continuation(self._prompt_ids, self._new_ids)
        return self._take(decoded.rstrip(REPLACEMENT_CHARACTER))

    def finish(self) -> str:
        """Return whatever is still held back (an unfinished character shows as U+FFFD)."""
        return self._take(self._tokenizer.decode_continuation(self._prompt_ids, self._new_ids))

    def _take(self, decoded: str) -> str:
        # Decoding is prefix-stable for the decoders in use; anything else is left unemitted
        # rather than sent twice.
        if not decoded.startswith(self._emitted):
            return ""
        delta = decoded[len(self._emitted) :]
        self._emitted = decoded
        return delta


WORD_REACH = 64
"""How far a word reaches from the cursor, each way: a longer run (minified code, base64, a
line of "=") is shown as the part around the cursor, so that a hover stays as quick as on a
word of this size instead of tokenizing and tabling megabytes."""


def word_at(text: Characters, offset: int) -> Word | None:
    """The word at `offset`: a run of word characters, or of punctuation; None on whitespace.

    `offset` is the character under the cursor (LSP hover positions point before it). Word
    characters are letters, digits and "_". A combining mark belongs to the run of the
    character it follows, so that a Devanagari vowel sign or a decomposed accent stays in its
    word and an emoji's variation selector in its emoji. The word ends `WORD_REACH` characters
    from the cursor at most.
    """
    if not 0 <= offset < len(text):
        return None
    # The reach in one slice: reading text blocks a character at a time costs ~1 µs each.
    first = max(0, offset - WORD_REACH)
    near = text[first : min(len(text), offset + 1 + WORD_REACH)]
    cursor = offset - first
    kinds = _kinds(near)
    kind = kinds[cursor]
    if kind == _SPACE:
        return None
    start, end = cursor, cursor + 1
    while start > 0 and kinds[start - 1] == kind:
        start -= 1
    while end < len(near) and kinds[end] == kind:
        end += 1
    return Word(near[start:end], first + start, first + end)


_SPACE, _WORD, _PUNCTUATION = range(3)


def _kinds(text: str) -> list[int]:
    """Each character's kind of run; a combining mark takes that of the character before it
    (a word's, after whitespace or at the start)."""
    kinds: list[int] = []
    for char in text:
        if char.isspace():
            kind = _SPACE
        elif unicodedata.category(char).startswith("M"):
            kind = kinds[-1] if kinds and kinds[-1] != _SPACE else _WORD
        elif char.isalnum() or char == "_":
            kind = _WORD
        else:
            kind = _PUNCTUATION
        kinds.append(kind)
    return kinds


WORD_BEFORE_REACH = 256
"""How far back `word_before` looks: editors match completion items against the whole word
before the cursor, which a cut word would not begin."""


def word_before(text: Characters, offset: int) -> str:
    """The run of word characters (with their marks, as `word_at` reads them) just before
    `offset`: "" after whitespace or punctuation. At most `WORD_BEFORE_REACH` of them."""
    near = text[max(0, offset - WORD_BEFORE_REACH) : offset]
    kinds = _kinds(near)
    start = len(near)
    while start > 0 and kinds[start - 1] == _WORD:
        start -= 1
    return near[start:]


def tokens_covering(spans: Sequence[TokenSpan], start: int, end: int) -> list[TokenSpan]:
    """The tokens that overlap the characters `[start, end)`, in order, after those that cover
    no character at `start`: the "▁" a SentencePiece tokenizer adds before the first word of a
    text, or of the text after a special token, where no piece joins it to the word ("你好" is
    "▁", "你", "好"; "Hello" is "▁Hello"). The model reads it because the word is there.

    Spans are ordered, so this is a binary search: a hover over a 10,000-line document looks at
    a handful of its ~100,000 tokens.
    """
    after = bisect.bisect_left(spans, end, key=lambda span: span.start)
    first = after
    while first > 0 and (spans[first - 1].end > start or _added_at(spans[first - 1], start)):
        first -= 1
    return [
        span
        for span in spans[first:after]
        if (span.start < end and start < span.end) or _added_at(span, start)
    ]


def _added_at(span: TokenSpan, offset: int) -> bool:
    """Whether `span` covers no character and stands at `offset`."""
    return span.start == span.end == offset


class _EncodedSpans(Sequence[TokenSpan]):
    """The spans of an encoding of `text`, each made when it is read: a search among them
    (`tokens_covering`) makes only the few it looks at."""

    def __init__(self, encoding: Encoding, text: str, stripping_pieces: dict[int, str]) -> None:
        self._ids: list[int] = encoding.ids
        self._pieces: list[str] = encoding.tokens
        # Looked up per span made: a whole document's 100,000 tokens would take ~30 ms.
        self._stripping_pieces = stripping_pieces
        self._offsets: list[tuple[int, int]] = encoding.offsets
        self._text = text

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> TokenSpan: ...

    @overload
    def __getitem__(self, index: slice) -> list[TokenSpan]: ...

    def __getitem__(self, index: int | slice) -> TokenSpan | list[TokenSpan]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        count = len(self._offsets)
        if index < 0:
            index += count
        next_start = self._offsets[index + 1][0] if index + 1 < count else None
        span = TokenSpan(self._ids[index], self._piece(index), *self._offsets[index])
        return _drop_added_prefix(span, next_start, self._text)

    def __iter__(self) -> Iterator[TokenSpan]:
        if not self._offsets:
            return
        next_starts = itertools.chain((start for start, _ in self._offsets[1:]), [None])
        stripping = self._stripping_pieces
        for token_id, piece, (start, end), next_start in zip(
            self._ids, self._pieces, self._offsets, next_starts, strict=True
        ):
            piece = stripping.get(token_id, piece) if stripping else piece
            yield _drop_added_prefix(TokenSpan(token_id, piece, start, end), next_start, self._text)

    def _piece(self, index: int) -> str:
        piece = self._pieces[index]
        return self._stripping_pieces.get(self._ids[index], piece)


def _drop_added_prefix(span: TokenSpan, next_start: int | None, text: str) -> TokenSpan:
    """Give an empty span to a lone "▁" that the tokenizer added rather than read from the text.

    The tokenizers library aligns such a prepended "▁" with the first character, which then
    appears covered twice (" this" → "▁" (0,1) and "▁this" (0,5)), or covered by a space that
    is not there ("😶" → "▁" (0,1) and four byte tokens (0,1)). `next_start` is where the
    following token starts (None for the last token).
    """
    if span.piece != METASPACE or span.start == span.end:
        return span
    covered = text[span.start : span.end]
    overlaps_next = next_start is not None and next_start < span.end
    if overlaps_next or not covered.isspace():
        return TokenSpan(span.id, span.piece, span.start, span.start)
    return span


def _unreadable(file: Path, error: Exception) -> ModelSourceError:
    return ModelSourceError(
        f"{file} cannot be read as a tokenizer file ({error}). Replace it with the model's own "
        "(or save it again with its library), or set phi3.model to another model."
    )


def _token_content(token: object) -> str | None:
    """`tokenizer_config.json` stores special tokens as strings or as AddedToken dicts."""
    if isinstance(token, str):
        return token
    if isinstance(token, dict) and isinstance(token.get("content"), str):
        content: str = token["content"]
        return content
    return None
