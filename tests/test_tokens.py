"""The document tokenizer against the real Phi-3 and SmolLM2 tokenizers and llama.cpp's vectors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from phi3_lsp.errors import ModelSourceError
from phi3_lsp.tokens import (
    WORD_BEFORE_REACH,
    WORD_REACH,
    DocumentTokenizer,
    TokenSpan,
    Word,
    tokens_covering,
    word_at,
    word_before,
)

CAPITAL = "The capital of France is"
CAPITAL_IDS = [450, 7483, 310, 3444, 338]
PHI3_BOS = 1
PARIS = 3681
LLAMA_CPP_SEPARATOR = "\n__ggml_vocab_test__\n"
MIXED_TEXT = "café 🦙 naïve — 我想 😶‍🌫️ done\n\tx = 1"


@pytest.fixture(scope="module")
def phi3(phi3_mini_dir: Path) -> DocumentTokenizer:
    return DocumentTokenizer.from_dir(phi3_mini_dir)


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path) -> DocumentTokenizer:
    return DocumentTokenizer.from_dir(smollm2_dir)


def ids(spans: list[TokenSpan]) -> list[int]:
    return [span.id for span in spans]


class TestPhi3Tokenizer:
    def test_the_capital_of_france_without_special_tokens(self, phi3: DocumentTokenizer) -> None:
        assert ids(phi3.token_spans(CAPITAL)) == CAPITAL_IDS
        assert phi3.encode(CAPITAL) == CAPITAL_IDS

    def test_a_prompt_starts_with_bos(self, phi3: DocumentTokenizer) -> None:
        assert phi3.encode_prompt(CAPITAL) == [PHI3_BOS, *CAPITAL_IDS]

    def test_paris_alone_decodes_without_a_space(self, phi3: DocumentTokenizer) -> None:
        assert phi3.decode([PARIS]) == "Paris"

    def test_paris_after_the_prompt_keeps_its_space(self, phi3: DocumentTokenizer) -> None:
        prompt = phi3.encode_prompt(CAPITAL)
        assert phi3.decode_continuation(prompt, [PARIS]) == " Paris"

    def test_the_end_of_text_token_ends_generation(self, phi3: DocumentTokenizer) -> None:
        assert 32000 in phi3.eos_token_ids

    def test_every_llama_cpp_reference_vector(
        self, phi3_mini_dir: Path, phi3: DocumentTokenizer
    ) -> None:
        # llama.cpp's test-tokenizer-0 format: texts separated by a marker line, one line of ids
        # per text in the .out file. Its SPM tokenizer adds a leading space to non-empty text,
        # as this tokenizer's Prepend("▁") normalizer does.
        inputs = (phi3_mini_dir / "ggml-vocab-phi-3.gguf.inp").read_text(encoding="utf-8")
        texts = inputs.split(LLAMA_CPP_SEPARATOR)
        assert texts[-1] == ""  # the file ends with a separator
        texts = texts[:-1]
        outputs = (phi3_mini_dir / "ggml-vocab-phi-3.gguf.out").read_text(encoding="utf-8")
        expected = [[int(token) for token in line.split()] for line in outputs.splitlines()]
        assert len(texts) == len(expected) == 46
        mismatches = [
            (text, want, phi3.encode(text))
            for text, want in zip(texts, expected, strict=True)
            if phi3.encode(text) != want
        ]
        assert mismatches == []


class TestOffsets:
    @pytest.mark.parametrize("text", [CAPITAL, MIXED_TEXT, "   Hello\n    Hello", " (", "\n ="])
    def test_spans_are_ordered_and_inside_the_text(
        self, phi3: DocumentTokenizer, smollm2: DocumentTokenizer, text: str
    ) -> None:
        for tokenizer in (phi3, smollm2):
            spans = tokenizer.token_spans(text)
            assert all(0 <= s.start <= s.end <= len(text) for s in spans)
            assert [s.start for s in spans] == sorted(s.start for s in spans)
            # Every character is covered by some token: nothing of the document is lost.
            covered = {i for s in spans for i in range(s.start, s.end)}
            assert covered == set(range(len(text)))

    @pytest.mark.parametrize("text", [CAPITAL, MIXED_TEXT, "😶 ok", " this", "  ", ""])
    def test_token_starts_are_the_spans_ids_and_starts(
        self, phi3: DocumentTokenizer, smollm2: DocumentTokenizer, text: str
    ) -> None:
        # A prompt is cut with `token_starts`, a hover reads `token_spans`: the same tokens.
        for tokenizer in (phi3, smollm2):
            spans = tokenizer.token_spans(text)
            starts = tokenizer.token_starts(text)
            assert starts.ids == ids(spans)
            assert starts.starts == [span.start for span in spans]

    def test_words_map_to_their_own_characters(self, phi3: DocumentTokenizer) -> None:
        spans = phi3.token_spans(CAPITAL)
        assert [CAPITAL[s.start : s.end] for s in spans] == [
            "The",
            " capital",
            " of",
            " France",
            " is",
        ]
        assert [s.piece for s in spans] == ["▁The", "▁capital", "▁of", "▁France", "▁is"]

    def test_byte_fallback_tokens_of_an_emoji_share_its_span(self, phi3: DocumentTokenizer) -> None:
        text = "a 🦙 b"
        llama = text.index("🦙")
        byte_spans = [s for s in phi3.token_spans(text) if s.piece.startswith("<0x")]
        assert [s.piece for s in byte_spans] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
        assert {(s.start, s.end) for s in byte_spans} == {(llama, llama + 1)}

    def test_offsets_count_characters_not_bytes(self, smollm2: DocumentTokenizer) -> None:
        text = "naïve 我想 world"
        world = [s for s in smollm2.token_spans(text) if s.piece == "Ġworld"]
        assert len(world) == 1
        assert text[world[0].start : world[0].end] == " world"

    def test_the_space_the_tokenizer_adds_covers_nothing(self, phi3: DocumentTokenizer) -> None:
        # "😶" becomes "▁" plus four byte tokens; that "▁" is not in the document.
        first, *rest = phi3.token_spans("😶 ok")
        assert (first.piece, first.start, first.end) == ("▁", 0, 0)
        assert [(s.start, s.end) for s in rest[:4]] == [(0, 1)] * 4
        # " this": the added "▁" and the real space; only "▁this" covers the space.
        added, this = phi3.token_spans(" this")
        assert (added.start, added.end) == (0, 0)
        assert (this.piece, this.start, this.end) == ("▁this", 0, 5)

    def test_a_real_leading_space_is_covered(self, phi3: DocumentTokenizer) -> None:
        (spaces,) = phi3.token_spans("  ")
        assert (spaces.start, spaces.end) == (0, 2)


class TestDecoding:
    def test_a_byte_level_continuation_keeps_its_space(self, smollm2: DocumentTokenizer) -> None:
        prompt = smollm2.encode_prompt(CAPITAL)
        new = smollm2.encode(" Paris.")
        assert smollm2.decode_continuation(prompt, new) == " Paris."

    def test_a_continuation_after_a_trailing_space_adds_no_second_space(
        self, phi3: DocumentTokenizer
    ) -> None:
        prompt = phi3.encode_prompt(CAPITAL + " ")
        assert phi3.piece(prompt[-1]) == "▁"
        par, is_ = 2177, 275  # "Par" and "is" without "▁"
        assert [phi3.piece(par), phi3.piece(is_)] == ["Par", "is"]
        assert phi3.decode_continuation(prompt, [par, is_]) == "Paris"
        assert phi3.decode_continuation(prompt, [PARIS]) == " Paris"  # "▁Paris" brings its own

    def test_special_tokens_are_not_text(self, phi3: DocumentTokenizer) -> None:
        prompt = phi3.encode_prompt(CAPITAL)
        assert phi3.decode_continuation(prompt, [PARIS, 32007]) == " Paris"

    @pytest.mark.parametrize("continuation", [" ok 🦙 done", "😶‍🌫️!", " 我想在apple工作"])
    def test_streaming_never_emits_half_a_character(
        self, phi3: DocumentTokenizer, smollm2: DocumentTokenizer, continuation: str
    ) -> None:
        for tokenizer in (phi3, smollm2):
            prompt = tokenizer.encode_prompt("Say:")
            new_ids = tokenizer.encode(continuation)
            stream = tokenizer.stream(prompt)
            pieces = [stream.push(token_id) for token_id in new_ids]
            pieces.append(stream.finish())
            assert all("\ufffd" not in piece for piece in pieces)
            assert "".join(pieces) == tokenizer.decode_continuation(prompt, new_ids)
            assert "".join(pieces).strip() == continuation.strip()

    def test_an_unfinished_character_shows_at_the_end(self, phi3: DocumentTokenizer) -> None:
        stream = phi3.stream(phi3.encode_prompt("Say:"))
        assert stream.push(phi3.encode(" 🦙")[-4]) == ""  # first of four bytes: held back
        assert stream.finish() == "\ufffd"


class TestWords:
    def test_a_word_under_the_cursor(self) -> None:
        assert word_at("The capital of", 6) == Word("capital", 4, 11)
        assert word_at("The capital of", 4) == Word("capital", 4, 11)
        assert word_at("The capital of", 10) == Word("capital", 4, 11)

    def test_punctuation_is_its_own_word(self) -> None:
        assert word_at("f(x) -> y", 5) == Word("->", 5, 7)
        assert word_at("f(x) -> y", 1) == Word("(", 1, 2)

    def test_a_word_reaches_a_bounded_distance_from_the_cursor(self) -> None:
        # A 5,000,000-character run (minified code, base64) took 5-42 s to hover.
        run = "x = " + "a" * 5_000_000 + " y"
        middle = 2_500_000
        assert word_at(run, middle) == Word(
            "a" * (2 * WORD_REACH + 1), middle - WORD_REACH, middle + WORD_REACH + 1
        )
        assert word_at(run, 5) == Word("a" * (WORD_REACH + 2), 4, 5 + WORD_REACH + 1)

    def test_whitespace_and_outside_are_nothing(self) -> None:
        assert word_at("a b", 1) is None
        assert word_at("ab", 2) is None
        assert word_at("", 0) is None
        assert word_at("ab", -1) is None

    def test_the_word_before_the_cursor(self) -> None:
        assert word_before("print(max_", 10) == "max_"
        assert word_before("print(max_", 6) == ""  # after punctuation
        assert word_before("France is ", 10) == ""  # after a space
        assert word_before("one\ntwo", 4) == ""  # at a line's start
        assert word_before("naïve", 5) == "naïve"
        assert word_before("x" * 1000, 1000) == "x" * WORD_BEFORE_REACH
        assert word_before("!\u0301", 2) == ""  # the mark goes with the "!"

    def test_words_in_other_scripts(self) -> None:
        assert word_at("naïve 我想 x", 7) == Word("我想", 6, 8)

    def test_combining_marks_stay_in_their_word(self) -> None:
        # Devanagari vowel signs and viramas, and an accent written as its own character.
        hindi = "भाषा: हिन्दी और"
        assert word_at(hindi, hindi.index("ह")) == Word("हिन्दी", 6, 12)
        assert word_at(hindi, hindi.index("ि")) == Word("हिन्दी", 6, 12)
        assert word_at("cafe\u0301 ok", 4) == Word("cafe\u0301", 0, 5)

    def test_a_mark_after_punctuation_or_an_emoji_stays_with_it(self) -> None:
        # The face in clouds: face, zero-width joiner, fog, variation selector (a mark).
        emoji = "\U0001f636\u200d\U0001f32b\ufe0f"
        text = f"see {emoji} here"
        assert word_at(text, text.index("\ufe0f")) == Word(emoji, 4, 8)
        assert word_at(text, 4) == Word(emoji, 4, 8)
        assert word_at("!\u0301ab", 2) == Word("ab", 2, 4)
        assert word_at("!\u0301ab", 1) == Word("!\u0301", 0, 2)

    def test_tokens_covering_a_word(self, phi3: DocumentTokenizer) -> None:
        spans = phi3.token_spans(CAPITAL)
        word = word_at(CAPITAL, CAPITAL.index("France"))
        assert word is not None
        assert ids(tokens_covering(spans, word.start, word.end)) == [3444]

    def test_all_bytes_of_an_emoji_cover_it(self, phi3: DocumentTokenizer) -> None:
        text = "x 🦙 y"
        covering = tokens_covering(phi3.token_spans(text), 2, 3)
        assert [s.piece for s in covering] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]

    @pytest.mark.parametrize(
        ("text", "word"),
        [
            ("你好 world", "你好"),
            ("नमस्ते दुनिया", "नमस्ते"),
            ("😶 ok", "😶"),
            ("<|user|>\n你好", "你好"),
            ("Hi<|end|>😶", "😶"),
        ],
        ids=["CJK", "Devanagari", "emoji", "after a chat token", "after another"],
    )
    def test_the_space_added_before_a_word_is_one_of_its_tokens(
        self, phi3: DocumentTokenizer, phi3_mini_dir: Path, text: str, word: str
    ) -> None:
        # The model reads a "▁" before these words, which no piece joins to them ("Hello" has
        # it in "▁Hello"): the tokens of the text up to the word's end, after those before it.
        start = text.index(word)
        end = start + len(word)
        covering = tokens_covering(phi3.token_spans(text), start, end)
        tokenizer = Tokenizer.from_file(str(phi3_mini_dir / "tokenizer.json"))
        before = tokenizer.encode(text[:start], add_special_tokens=False).ids
        through = tokenizer.encode(text[:end], add_special_tokens=False).ids
        assert through[: len(before)] == before
        assert ids(covering) == through[len(before) :]
        assert covering[0].piece == "▁"

    def test_a_space_typed_before_a_word_is_not_one_of_its_tokens(
        self, phi3: DocumentTokenizer
    ) -> None:
        # It is the space's token: it covers that character, not the word.
        text = "x 你好"
        covering = tokens_covering(phi3.token_spans(text), 2, 4)
        assert [span.piece for span in covering] == ["你", "好"]


def test_the_tokenizer_loads_without_torch_or_transformers(phi3_mini_dir: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from phi3_lsp.tokens import DocumentTokenizer; "
        f"DocumentTokenizer.from_dir(Path({str(phi3_mini_dir)!r})); "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("damaged", "content"),
    [("tokenizer.json", '{"version": "1.0", "model": '), ("tokenizer_config.json", "{eos")],
)
def test_a_tokenizer_file_that_cannot_be_read_is_named(
    phi3_mini_dir: Path, tmp_path: Path, damaged: str, content: str
) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(phi3_mini_dir / name, tmp_path / name)
    (tmp_path / damaged).write_text(content, encoding="utf-8")
    with pytest.raises(ModelSourceError, match="cannot be read as a tokenizer file") as raised:
        DocumentTokenizer.from_dir(tmp_path)
    assert str(tmp_path / damaged) in str(raised.value)
    assert "phi3.model" in str(raised.value)


@pytest.mark.parametrize("texts", [[MIXED_TEXT, "😶 ok", " this", CAPITAL], [""]])
def test_covering_spans_of_several_texts_match_their_whole_token_lists(
    phi3: DocumentTokenizer, smollm2: DocumentTokenizer, texts: list[str]
) -> None:
    for tokenizer in (phi3, smollm2):
        ranges = [(text, start, start + 1) for text in texts for start in range(len(text) or 1)]
        expected = [tokens_covering(tokenizer.token_spans(t), a, b) for t, a, b in ranges]
        assert tokenizer.covering_spans(ranges) == expected


def test_a_lone_surrogate_tokenizes_as_a_replacement_character(
    phi3: DocumentTokenizer, smollm2: DocumentTokenizer
) -> None:
    # JSON lets an editor send "\ud800" alone; the tokenizer refused the whole text with a
    # TypeError, and hovers and completions near it failed with tracebacks.
    text = "def f\ud800oo(a):\n    x = \ud800\n    return x"
    clean = text.replace("\ud800", "\ufffd")
    for tokenizer in (phi3, smollm2):
        assert tokenizer.token_spans(text) == tokenizer.token_spans(clean)
        assert tokenizer.token_starts(text) == tokenizer.token_starts(clean)
        assert tokenizer.encode_prompt(text) == tokenizer.encode_prompt(clean)
        assert tokenizer.covering_spans([(text, 4, 8)]) == tokenizer.covering_spans([(clean, 4, 8)])


@pytest.mark.parametrize("add_bos_token", [None, False, True])
def test_a_phi3_prompt_is_what_transformers_makes_of_the_same_folder(
    phi3_mini_dir: Path, tmp_path: Path, add_bos_token: bool | None
) -> None:
    # Completions must start from the prompt transformers' own `generate()` would get. The
    # published Phi-3-mini config names `LlamaTokenizer` and `add_bos_token: false`; the
    # installed transformers lets `tokenizer.json` decide, and so must the server.
    from transformers import AutoTokenizer

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(phi3_mini_dir / name, tmp_path / name)
    config_file = tmp_path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "LlamaTokenizer"
    config.pop("add_bos_token", None)
    if add_bos_token is not None:
        config["add_bos_token"] = add_bos_token
    config_file.write_text(json.dumps(config), encoding="utf-8")
    expected = AutoTokenizer.from_pretrained(tmp_path)(MIXED_TEXT)["input_ids"]
    assert DocumentTokenizer.from_dir(tmp_path).encode_prompt(MIXED_TEXT) == expected


def test_a_smollm2_prompt_is_what_transformers_makes_of_the_same_folder(
    smollm2_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(smollm2_dir)(MIXED_TEXT)["input_ids"]
    assert DocumentTokenizer.from_dir(smollm2_dir).encode_prompt(MIXED_TEXT) == expected
