"""Settings from the client's `phi3` section: typed values, defaults, clear problems."""

from __future__ import annotations

import os

from phi3_lsp.scheduling import physical_cores
from phi3_lsp.settings import (
    Settings,
    describe_changes,
    parse_settings,
    section_of,
    unwrapped_settings,
)
from phi3_lsp.sources import DEFAULT_MODEL


def test_no_section_means_the_defaults() -> None:
    settings, problems = parse_settings(None, Settings())
    assert settings == Settings()
    assert settings.model == DEFAULT_MODEL
    assert settings.max_new_tokens == 50
    assert settings.context_tokens == 1024
    assert problems == []


def test_every_key_is_read_into_its_field() -> None:
    raw = {
        "model": "smollm2-135m",
        "maxNewTokens": 20,
        "contextTokens": 256,
        "threads": 2,
        "int4Drafts": False,
        "inlineCompletions": False,
        "trustRemoteCode": True,
    }
    settings, problems = parse_settings(raw, Settings())
    assert settings == Settings(
        model="smollm2-135m",
        max_new_tokens=20,
        context_tokens=256,
        threads=2,
        int4_drafts=False,
        inline_completions=False,
        trust_remote_code=True,
    )
    assert problems == []


def test_missing_keys_come_from_the_given_defaults() -> None:
    defaults = Settings(model="/models/from-the-command-line")
    settings, _ = parse_settings({"maxNewTokens": 8}, defaults)
    assert settings.model == "/models/from-the-command-line"
    assert settings.max_new_tokens == 8


def test_an_invalid_value_is_reported_and_its_default_kept() -> None:
    settings, problems = parse_settings(
        {"maxNewTokens": 0, "contextTokens": "lots", "model": "smollm2-135m"}, Settings()
    )
    assert settings.max_new_tokens == 50
    assert settings.context_tokens == 1024
    assert settings.model == "smollm2-135m"  # the valid key still applies
    assert len(problems) == 2
    assert "phi3.maxNewTokens must be at least 1, got 0" in problems[0]
    assert "Keeping 50" in problems[0]
    assert "phi3.contextTokens must be an integer, got 'lots'" in problems[1]


def test_limits_are_inclusive_and_enforced_at_both_ends() -> None:
    assert parse_settings({"maxNewTokens": 512}, Settings())[0].max_new_tokens == 512
    settings, problems = parse_settings({"maxNewTokens": 513}, Settings())
    assert settings.max_new_tokens == 50
    assert "at most 512" in problems[0]
    assert parse_settings({"threads": -1}, Settings())[1] != []
    cpus = len(os.sched_getaffinity(0))  # the CPUs this process may run on
    assert parse_settings({"threads": cpus}, Settings())[0].threads == cpus
    many, problems = parse_settings({"threads": cpus + 1}, Settings())
    assert many.threads == 0
    assert problems == [f"phi3.threads must be at most {cpus}, got {cpus + 1}. Keeping 0."]


def test_a_huge_number_is_shown_short_and_a_small_one_exactly() -> None:
    # 1e300 is an integer to JSON: written out, it would fill the warning with 301 digits.
    problems = parse_settings({"maxNewTokens": 1e300, "contextTokens": -(10**40) - 7}, Settings())[
        1
    ]
    assert problems == [
        "phi3.maxNewTokens must be at most 512, got 1e+300. Keeping 50.",
        "phi3.contextTokens must be at least 16, got -1e+40. Keeping 1024.",
    ]
    problems = parse_settings({"maxNewTokens": 123_456_789_012_345}, Settings())[1]
    assert problems == ["phi3.maxNewTokens must be at most 512, got 123456789012345. Keeping 50."]
    problems = parse_settings({"maxNewTokens": 1_234_567_890_123_456_789}, Settings())[1]
    assert problems == ["phi3.maxNewTokens must be at most 512, got 1.235e+18. Keeping 50."]


def test_json_numbers_with_integer_values_are_integers_but_booleans_are_not() -> None:
    assert parse_settings({"maxNewTokens": 30.0}, Settings())[0].max_new_tokens == 30
    settings, problems = parse_settings({"maxNewTokens": True, "contextTokens": 12.5}, Settings())
    assert (settings.max_new_tokens, settings.context_tokens) == (50, 1024)
    assert len(problems) == 2


def test_booleans_must_be_booleans() -> None:
    settings, problems = parse_settings({"inlineCompletions": "no"}, Settings())
    assert settings.inline_completions is True
    assert "phi3.inlineCompletions must be true or false" in problems[0]


def test_an_empty_model_is_rejected_and_whitespace_is_trimmed() -> None:
    assert parse_settings({"model": "  smollm2-135m "}, Settings())[0].model == "smollm2-135m"
    settings, problems = parse_settings({"model": "   "}, Settings())
    assert settings.model == DEFAULT_MODEL
    assert "phi3.model must be a non-empty string" in problems[0]


def test_unknown_keys_and_nulls_are_ignored() -> None:
    settings, problems = parse_settings({"temperature": 0.7, "threads": None}, Settings())
    assert settings == Settings()
    assert problems == []


def test_a_section_that_is_not_an_object_is_reported() -> None:
    current = Settings(model="smollm2-135m", weights="int4")
    settings, problems = parse_settings(["smollm2-135m"], Settings(), current=current)
    assert settings == current
    assert problems == [
        "The phi3 settings must be an object, got an array. Keeping the settings in force."
    ]


def test_an_invalid_value_keeps_the_one_in_force_not_the_default() -> None:
    # A typo in `weights` must not reload the model in fp32; a key left out is the default.
    current = Settings(model="smollm2-135m", weights="int4", threads=1, max_new_tokens=8)
    settings, problems = parse_settings(
        {"model": "", "weights": "int8", "threads": 10_000}, Settings(), current=current
    )
    assert (settings.model, settings.weights, settings.threads) == ("smollm2-135m", "int4", 1)
    assert settings.max_new_tokens == 50
    assert [problem.rsplit(". ", 1)[1] for problem in problems] == [
        "Keeping 'smollm2-135m'.",
        "Keeping 1.",
        "Keeping 'int4'.",
    ]


def test_only_the_length_limit_the_prompt_budget_and_the_threads_shape_a_suggestion() -> None:
    base = Settings()
    assert base.shapes_suggestions_unlike(Settings(max_new_tokens=10))
    assert base.shapes_suggestions_unlike(Settings(context_tokens=64))
    # No reload on a change of threads, and an fp32 prompt's bits change with them.
    assert base.shapes_suggestions_unlike(Settings(threads=physical_cores() + 1))
    assert not base.shapes_suggestions_unlike(Settings(threads=physical_cores()))  # the same count
    assert not base.shapes_suggestions_unlike(Settings(answer_budget_ms=0, read_at_cursor=False))


def test_the_section_is_found_in_client_payloads() -> None:
    assert section_of({"phi3": {"model": "x"}, "other": {}}) == {"model": "x"}
    assert section_of({"other": {}}) is None
    assert section_of(None) is None


def test_settings_sent_without_the_section_are_named_with_the_fix() -> None:
    [by_name] = unwrapped_settings({"model": "smollm2-135m", "maxNewTokens": 3, "other": 1})
    assert "model, maxNewTokens." in by_name
    assert by_name.endswith('Send them as {"phi3": {"model": …, "maxNewTokens": …}}.')
    [dotted] = unwrapped_settings({"phi3.model": "smollm2-135m"})
    assert "phi3.model." in dotted
    assert dotted.endswith('Send them as {"phi3": {"model": …}}.')


def test_payloads_with_the_section_or_only_other_tools_settings_are_fine() -> None:
    assert unwrapped_settings({"phi3": {"model": "x"}, "model": "for another tool"}) == []
    assert unwrapped_settings({"pylsp": {"plugins": {}}}) == []
    assert unwrapped_settings(None) == []
    assert unwrapped_settings(["model"]) == []


def test_weights_take_one_of_the_known_formats() -> None:
    settings, problems = parse_settings({"weights": "int4"}, Settings())
    assert settings.weights == "int4" and problems == []
    settings, problems = parse_settings({"weights": "int8"}, Settings())
    assert settings.weights == "fp32"
    assert problems == ["phi3.weights must be 'fp32' or 'int4', got 'int8'. Keeping 'fp32'."]


def test_a_change_is_described_with_the_keys_users_write() -> None:
    before = Settings()
    after, problems = parse_settings({"answerBudgetMs": 0, "weights": "int4"}, before)
    assert problems == []
    assert describe_changes(before, after) == [
        "phi3.weights: 'fp32' → 'int4'",
        "phi3.answerBudgetMs: 600 → 0",
    ]
    assert describe_changes(after, after) == []


def test_values_are_written_as_in_the_settings_file() -> None:
    # JSON's true and false, not Python's True and False.
    settings, problems = parse_settings({"int4Drafts": "yes"}, Settings())
    assert problems == ["phi3.int4Drafts must be true or false, got 'yes'. Keeping true."]
    assert describe_changes(settings, Settings(int4_drafts=False)) == [
        "phi3.int4Drafts: true → false"
    ]
