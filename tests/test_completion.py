"""Prompt building, tidy-up and typing-through, with the real Phi-3 tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from phi3_lsp.completion import (
    build_prompt,
    has_text_to_continue,
    prompt_budget,
    tidy_continuation,
)
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


def test_a_long_text_is_cut_from_the_left_to_the_budget(phi3_tokenizer: DocumentTokenizer) -> None:
    text = "Once upon a time there was a tokenizer. " * 20 + "The capital of France is"
    prompt = build_prompt(phi3_tokenizer, text, budget=12)
    assert len(prompt.ids) == 12
    assert prompt.ids[0] == BOS
    # The end of the document is kept, as the document tokenizes, the beginning dropped.
    assert prompt.ids[1:] == phi3_tokenizer.encode(text)[-11:]
    assert prompt.ids[-len(CAPITAL_IDS) :] == CAPITAL_IDS
    assert text.endswith(prompt.text)
    # 11 tokens: there|was|a|token|izer|.|The|capital|of|France|is
    assert prompt.text == " there was a tokenizer. The capital of France is"


def test_the_budget_counts_bos_and_the_cut_adds_no_token(
    phi3_tokenizer: DocumentTokenizer,
) -> None:
    prompt = build_prompt(phi3_tokenizer, "The capital of France is", budget=5)
    # Re-encoding " capital of France is" would start with a lone "▁" (29871).
    assert prompt.ids == [BOS, *CAPITAL_IDS[1:]]
    assert prompt.text == " capital of France is"


def test_a_huge_document_is_cut_without_tokenizing_it_whole(
    phi3_tokenizer: DocumentTokenizer,
) -> None:
    text = "x = 1; " * 200_000 + "The capital of France is"
    prompt = build_prompt(phi3_tokenizer, text, budget=64)
    assert len(prompt.ids) == 64
    assert text.endswith(prompt.text)
    assert prompt.ids[-len(CAPITAL_IDS) :] == CAPITAL_IDS


def test_text_of_long_tokens_still_fills_the_budget(phi3_tokenizer: DocumentTokenizer) -> None:
    # Runs of spaces tokenize at over 10 characters per token: the first, narrow window falls
    # short of the budget, and a wider one is taken.
    text = ("x" + " " * 31) * 400 + "The capital of France is"
    prompt = build_prompt(phi3_tokenizer, text, budget=64)
    assert len(prompt.ids) == 64
    assert prompt.ids[1:] == phi3_tokenizer.encode(text)[-63:]


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
    assert prompt_budget(context_tokens=16, model_context=8, max_new_tokens=50) == 1


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
