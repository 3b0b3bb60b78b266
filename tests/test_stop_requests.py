"""Stop requests: which prompt pass in flight a stop lets finish."""

from __future__ import annotations

from phi3_lsp.stop_requests import StopRequest, TokenLimit

PROMPT = [1, 450, 7483, 310, 3444, 338]


def test_a_plain_stop_spares_no_pass() -> None:
    stop = StopRequest()
    stop.set()
    assert stop.is_set()
    assert not stop.spares(PROMPT[:3])


def test_a_stop_keeping_a_prompt_spares_passes_over_its_prefixes_only() -> None:
    stop = StopRequest()
    stop.stop_keeping(PROMPT)
    assert stop.is_set()
    assert stop.spares(PROMPT[:3])
    assert stop.spares(PROMPT)
    assert not stop.spares([*PROMPT, 13])  # the request does not need the last token's pass
    assert not stop.spares([1, 450, 9])


def test_several_stops_spare_only_what_all_their_prompts_begin_with() -> None:
    stop = StopRequest()
    stop.stop_keeping(PROMPT)
    stop.stop_keeping([*PROMPT[:4], 99, 100])
    assert stop.spares(PROMPT[:4])
    assert not stop.spares(PROMPT[:5])


def test_a_plain_stop_before_or_after_a_keeping_one_spares_nothing() -> None:
    kept_then_stopped, stopped_then_kept = StopRequest(), StopRequest()
    kept_then_stopped.stop_keeping(PROMPT)
    kept_then_stopped.set()
    stopped_then_kept.set()
    stopped_then_kept.stop_keeping(PROMPT)
    assert not kept_then_stopped.spares(PROMPT[:2])
    assert not stopped_then_kept.spares(PROMPT[:2])


def test_a_token_limit_is_only_ever_lowered_and_stays_at_least_one() -> None:
    limit = TokenLimit(50)
    limit.lower_to(400)
    assert limit.tokens == 50
    limit.lower_to(5)
    assert limit.tokens == 5
    limit.lower_to(0)
    assert limit.tokens == 1
