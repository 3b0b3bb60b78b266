"""Prompt building and tidy-up, with the real Phi-3 (and SmolLM2) tokenizers."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from phi3_lsp.completion import (
    Prompt,
    build_prompt,
    fit_to_line,
    has_text_to_continue,
    lines_to_show,
    new_token_limit,
    prompt_budget,
    prompt_text_start,
    tidy_continuation,
)
from phi3_lsp.completion import _anchor as cut_anchor
from phi3_lsp.prefixes import common_prefix_length
from phi3_lsp.tokens import DocumentTokenizer

BOS = 1
# Phi-3's ids for "The capital of France is" (llama.cpp's reference tokenizer agrees).
CAPITAL_IDS = [450, 7483, 310, 3444, 338]


@pytest.fixture(scope="module")
def phi3_tokenizer(phi3_mini_dir: Path) -> DocumentTokenizer:
    return DocumentTokenizer.from_dir(phi3_mini_dir)


def test_a_short_text_is_the_whole_prompt_after_bos(phi3_tokenizer: DocumentTokenizer) -> None:
    prompt = build_prompt(phi3_tokenizer, "The capital of France is", budget=1024)
    assert prompt.ids == [BOS, *CAPITAL_IDS]
    assert prompt.text == "The capital of France is"


def assert_fits_and_keeps_the_end(
    tokenizer: DocumentTokenizer, text: str, budget: int, prompt: Prompt
) -> None:
    """The prompt is the special tokens and the document's own last tokens, within the budget,
    and keeps more than half of the text that would fit."""
    specials = tokenizer.encode_prompt("")
    assert len(prompt.ids) <= budget
    assert prompt.ids[: len(specials)] == specials
    assert prompt.ids[len(specials) :] == tokenizer.encode(text)[len(specials) - len(prompt.ids) :]
    assert text.endswith(prompt.text)
    room = budget - len(specials)
    fitting = len(text) - tokenizer.token_spans(text)[-room].start
    assert len(prompt.text) > fitting // 2


def test_a_long_text_is_cut_from_the_left_to_fit_the_budget(
    phi3_tokenizer: DocumentTokenizer,
) -> None:
    text = "Once upon a time there was a tokenizer. " * 20 + "The capital of France is"
    prompt = build_prompt(phi3_tokenizer, text, budget=12)
    assert_fits_and_keeps_the_end(phi3_tokenizer, text, 12, prompt)
    assert prompt.ids[-len(CAPITAL_IDS) :] == CAPITAL_IDS
    # The cut falls on a fixed slot of 11 characters: was|a|token|izer|.|The|capital|of|France|is
    assert prompt.text == " was a tokenizer. The capital of France is"


def test_the_budget_counts_bos_and_the_cut_adds_no_token(
    phi3_tokenizer: DocumentTokenizer,
) -> None:
    prompt = build_prompt(phi3_tokenizer, "The capital of France is", budget=4)
    # Re-encoding " France is" would start with a lone "▁" (29871).
    assert prompt.ids == [BOS, *CAPITAL_IDS[3:]]
    assert prompt.text == " France is"


@pytest.mark.parametrize("line_break", ["\n", "\r\n", "\r"])
def test_the_cut_falls_on_a_line_start(phi3_tokenizer: DocumentTokenizer, line_break: str) -> None:
    text = "".join(f"line_{number} = {number} * 2{line_break}" for number in range(400)) + "total ="
    prompt = build_prompt(phi3_tokenizer, text, budget=256)
    assert_fits_and_keeps_the_end(phi3_tokenizer, text, 256, prompt)
    assert prompt.text.startswith("line_")
    assert text[: -len(prompt.text)].endswith(line_break)


def test_the_cut_never_falls_between_a_carriage_return_and_its_line_feed() -> None:
    # Slots of 10 characters: the cut is the first line start in [10, 20), else 10.
    assert cut_anchor("x" * 15 + "\r\n" + "y" * 13, 10, 10) == 17
    # A "\r\n" at the slot's very end starts its line at 20, outside the slot.
    assert cut_anchor("x" * 18 + "\r\n" + "y" * 10, 10, 10) == 10


@pytest.mark.parametrize("tokenizer_name", ["phi3", "smollm2"])
def test_typing_at_the_end_of_a_long_document_keeps_the_prompts_start(
    tokenizer_name: str, phi3_mini_dir: Path, smollm2_dir: Path
) -> None:
    # The model reuses the cached keys and values of the prompt's unchanged first tokens: if
    # every keystroke moved the cut, each request would compute the whole prompt again.
    tokenizer = DocumentTokenizer.from_dir(
        phi3_mini_dir if tokenizer_name == "phi3" else smollm2_dir
    )
    text = Path(argparse.__file__).read_text(encoding="utf-8")[:30_000]
    typed = "\n    def parse_everything(self, arguments, *, strict=False):\n        return 1\n" * 3
    previous = build_prompt(tokenizer, text, budget=1024)
    moves = 0
    for character in typed:
        text += character
        prompt = build_prompt(tokenizer, text, budget=1024)
        assert len(prompt.ids) <= 1024
        # Typing changes at most the last few tokens (a word grows, a token splits).
        moves += common_prefix_length(previous.ids, prompt.ids) < len(previous.ids) - 3
        previous = prompt
    assert_fits_and_keeps_the_end(tokenizer, text, 1024, previous)
    # The cut moves once per slot of 1,023 characters: at most once for these 234 characters.
    assert moves <= 1


# Text where a character is about a token: the cut's slots of `room` characters are as long
# as all the text that fits, and a cut at a slot's far end left an empty prompt.
DENSE_TEXTS = {
    "japanese": ("日本語の文章はトークンが多い。" * 20 + "\n") * 30,
    "russian": ("Съешь же ещё этих мягких французских булок, да выпей чаю. " * 5 + "\n") * 30,
    "digits": ("".join(f"{n * 7919 % 100000:05d}," for n in range(60)) + "\n") * 30,
}


@pytest.mark.parametrize("kind", DENSE_TEXTS)
def test_text_of_about_a_token_per_character_keeps_half_the_budget_everywhere(
    phi3_tokenizer: DocumentTokenizer, kind: str
) -> None:
    text = DENSE_TEXTS[kind]
    for cursor in range(len(text) - 1500, len(text), 37):
        prompt = build_prompt(phi3_tokenizer, text[:cursor], budget=256)
        assert_fits_and_keeps_the_end(phi3_tokenizer, text[:cursor], 256, prompt)


def test_typing_japanese_moves_the_cut_rarely(phi3_tokenizer: DocumentTokenizer) -> None:
    text = DENSE_TEXTS["japanese"]
    previous = build_prompt(phi3_tokenizer, text, budget=1024)
    moves = 0
    for character in "東京は日本の首都であり、人口が多い。" * 10:
        text += character
        prompt = build_prompt(phi3_tokenizer, text, budget=1024)
        moves += common_prefix_length(previous.ids, prompt.ids) < len(previous.ids) - 3
        previous = prompt
    assert_fits_and_keeps_the_end(phi3_tokenizer, text, 1024, previous)
    # Slots of a quarter of what fits (~256 characters): about one move per slot typed.
    assert moves <= 3


def test_a_huge_document_is_cut_without_tokenizing_it_whole(
    phi3_tokenizer: DocumentTokenizer,
) -> None:
    text = "x = 1; " * 200_000 + "The capital of France is"
    prompt = build_prompt(phi3_tokenizer, text, budget=64)
    assert_fits_and_keeps_the_end(phi3_tokenizer, text[-2000:], 64, prompt)
    assert prompt.ids[-len(CAPITAL_IDS) :] == CAPITAL_IDS


def test_text_of_long_tokens_still_fills_the_budget(phi3_tokenizer: DocumentTokenizer) -> None:
    # Runs of spaces tokenize at over 10 characters per token: the first, narrow window falls
    # short of the budget, and a wider one is taken.
    text = ("x" + " " * 31) * 400 + "The capital of France is"
    prompt = build_prompt(phi3_tokenizer, text, budget=64)
    assert_fits_and_keeps_the_end(phi3_tokenizer, text, 64, prompt)


LONG_TEXTS = {
    "code": Path(argparse.__file__).read_text(encoding="utf-8")[:60_000],
    "code with \\r\\n": Path(argparse.__file__)
    .read_text(encoding="utf-8")[:60_000]
    .replace("\n", "\r\n"),
    "long tokens": ("x" + " " * 31 + "\n") * 2_000,
    "japanese": DENSE_TEXTS["japanese"] * 4,
}


@pytest.mark.parametrize("kind", LONG_TEXTS)
@pytest.mark.parametrize("tokenizer_name", ["phi3", "smollm2"])
def test_the_end_of_a_long_text_gives_the_prompt_the_whole_text_gives(
    kind: str, tokenizer_name: str, phi3_mini_dir: Path, smollm2_dir: Path
) -> None:
    # A completion copies only the end of the text before the cursor: the prompt, its cut
    # included, must be the one the whole text gives. Cursors at multiples of the reach leave
    # the least text; smollm2 has no BOS, so its windows reach furthest back.
    tokenizer = DocumentTokenizer.from_dir(
        phi3_mini_dir if tokenizer_name == "phi3" else smollm2_dir
    )
    text = LONG_TEXTS[kind]
    for budget in (16, 256):
        reach = budget * 32 + 1  # 32 characters a token at most, and the one before them
        assert prompt_text_start(3 * reach, budget) == 2 * reach  # the least text it leaves
        cursors = [*range(reach, len(text), len(text) // 5), 3 * reach, 3 * reach + 1, len(text)]
        for cursor in cursors:
            start = prompt_text_start(cursor, budget)
            assert start > 0 or cursor < 2 * reach
            whole = build_prompt(tokenizer, text[:cursor], budget)
            assert build_prompt(tokenizer, text[start:cursor], budget, start) == whole


def test_emoji_and_accents_survive_the_cut(phi3_tokenizer: DocumentTokenizer) -> None:
    text = "Crème brûlée 😀 " * 30 + "fin"
    prompt = build_prompt(phi3_tokenizer, text, budget=20)
    assert len(prompt.ids) <= 20
    assert text.endswith(prompt.text)
    assert prompt.ids[1:] == phi3_tokenizer.encode(text)[-(len(prompt.ids) - 1) :]


def test_an_empty_text_is_only_the_special_tokens(phi3_tokenizer: DocumentTokenizer) -> None:
    assert build_prompt(phi3_tokenizer, "", budget=16).ids == [BOS]


def test_the_budget_leaves_room_for_the_continuation_in_the_context() -> None:
    assert prompt_budget(context_tokens=1024, model_context=4096, max_new_tokens=50) == 1024
    assert prompt_budget(context_tokens=8192, model_context=4096, max_new_tokens=50) == 4046
    # A context of less than twice maxNewTokens: half of it for the prompt.
    assert prompt_budget(context_tokens=16, model_context=8, max_new_tokens=50) == 4
    assert prompt_budget(context_tokens=1024, model_context=80, max_new_tokens=50) == 40
    assert prompt_budget(context_tokens=16, model_context=80, max_new_tokens=50) == 16


def test_new_tokens_fill_at_most_what_the_context_leaves_after_the_prompt() -> None:
    assert new_token_limit(max_new_tokens=50, model_context=4096, prompt_tokens=1024) == 50
    assert new_token_limit(max_new_tokens=50, model_context=4096, prompt_tokens=4060) == 36
    # A context of at most maxNewTokens: the half `prompt_budget` keeps, then the rest.
    budget = prompt_budget(context_tokens=1024, model_context=32, max_new_tokens=50)
    assert new_token_limit(max_new_tokens=50, model_context=32, prompt_tokens=budget) == 16


def test_only_whitespace_before_the_cursor_has_nothing_to_continue() -> None:
    assert not has_text_to_continue("")
    assert not has_text_to_continue("  \n\t")
    assert has_text_to_continue("\n\ndef")


def test_tidying_drops_trailing_whitespace_and_broken_characters() -> None:
    assert tidy_continuation(" Paris.\n\n") == " Paris."
    assert tidy_continuation("\n    return x  ") == "\n    return x"
    assert tidy_continuation(" caf\ufffd") == " caf"
    assert tidy_continuation("\n\n  \n") == ""
    assert tidy_continuation("") == ""


def test_while_the_model_adds_to_it_only_complete_lines_are_shown() -> None:
    growing = " Paris.\n\nThe answer is: 2"  # "2" may become "2018"
    assert lines_to_show(growing, finished=False) == " Paris.\n\n"
    assert lines_to_show(growing, finished=True) == growing
    # A first line still being generated is all there is to show (the budget was spent).
    assert lines_to_show(" Par", finished=False) == " Par"
    # The line break that ends the cursor's own line is not a complete line.
    assert lines_to_show("\n    return a", finished=False) == "\n    return a"
    assert lines_to_show("\n    return a\n    b = ", finished=False) == "\n    return a\n"
    assert lines_to_show("", finished=False) == ""
    # Every line break LSP knows ends a line, a lone "\r" too.
    assert lines_to_show(" Paris.\r\rThe answer is: 2", finished=False) == " Paris.\r\r"
    assert lines_to_show(" Paris.\r\nThe answer", finished=False) == " Paris.\r\n"


def test_at_the_end_of_a_line_the_whole_continuation_is_shown() -> None:
    assert fit_to_line("a, b)\n\nprint(add(1, 2))", "") == "a, b)\n\nprint(add(1, 2))"
    assert fit_to_line("a, b)\n\nprint(add(1, 2))", "  \r") == "a, b)\n\nprint(add(1, 2))"


def test_in_the_middle_of_a_line_only_the_first_line_is_shown() -> None:
    assert fit_to_line(" Paris.\nIt is big.", " and that is a fact.") == " Paris."
    assert fit_to_line("a, b) + 1\nx = 2", ")") == "a, b) + 1"
    # A continuation that starts a new line has nothing to show before the rest of the line.
    assert fit_to_line("\n    return x", ")") == ""
    assert fit_to_line(" Paris.\rIt is big.", " and that is a fact.") == " Paris."
    assert fit_to_line(" Paris.\r\nIt is big.", " and that is a fact.") == " Paris."


def test_in_the_middle_of_a_line_the_rest_of_the_line_is_not_typed_twice() -> None:
    assert fit_to_line("a, b)\n\nprint(add(1, 2))", ")") == "a, b"
    assert fit_to_line('Hello, world!")  \n', '")\r') == "Hello, world!"
