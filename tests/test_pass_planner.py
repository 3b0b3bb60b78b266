"""Planning decode passes: the thread count that decodes fastest now, and drafts that pay."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from phi3_lsp.pass_planner import MAX_DRAFT, PROBE_GAP_MAX, PROBE_GAP_MIN, PassPlan, PassPlanner

PassCost = Callable[[int, int], float]
"""Seconds of a pass, from its thread count and width."""

# SmolLM2 in int4 on this 2-core CPU (see pass_planner): 1-token passes, in seconds.
IDLE = {1: 0.070, 2: 0.055}
ONE_CORE_TAKEN = {1: 0.065, 2: 0.230}
# The same on an idle 2-core AVX-512 CPU, where they are about as fast on 1 thread as on 2.
IDLE_EVEN = {1: 0.0147, 2: 0.0161}


def one_token_costs(seconds: dict[int, float]) -> PassCost:
    return lambda threads, width: seconds[threads] * (1 + 0.3 * (width - 1))


def run_passes(planner: PassPlanner, cost: PassCost, count: int, limit: int = 0) -> list[PassPlan]:
    """Plan and 'run' `count` passes that cost what `cost` says; return the plans."""
    plans = []
    for _ in range(count):
        plan = planner.plan(limit)
        width = 1 + plan.draft_length
        planner.record_pass(plan.threads, width, cost(plan.threads, width))
        plans.append(plan)
    return plans


class TestThreads:
    def test_each_thread_count_is_timed_before_one_is_chosen(self) -> None:
        plans = run_passes(PassPlanner((1, 2)), one_token_costs(IDLE), 2, limit=MAX_DRAFT)
        assert sorted(plan.threads for plan in plans) == [1, 2]
        assert all(plan.draft_length == 0 for plan in plans)

    def test_the_faster_count_runs_the_passes(self) -> None:
        planner = PassPlanner((1, 2))
        plans = run_passes(planner, one_token_costs(IDLE), 100)
        assert sum(plan.threads == 2 for plan in plans) > 90
        plans = run_passes(PassPlanner((1, 2)), one_token_costs({1: 0.050, 2: 0.080}), 100)
        assert sum(plan.threads == 1 for plan in plans) > 90

    def test_a_count_that_slows_down_is_left_within_a_few_passes(self) -> None:
        planner = PassPlanner((1, 2))
        run_passes(planner, one_token_costs(IDLE), 30)
        assert planner.plan(0).threads == 2
        # Another process takes a core: 2-thread passes wait for the thread that lost it.
        plans = run_passes(planner, one_token_costs(ONE_CORE_TAKEN), 4)
        assert plans[-1].threads == 1

    @pytest.mark.parametrize("width", [1 + MAX_DRAFT, 12])  # 12: between widths timed
    def test_a_pass_several_times_slower_than_its_kind_leaves_its_count_at_once(
        self, width: int
    ) -> None:
        planner = PassPlanner((1, 2))
        run_passes(planner, one_token_costs(IDLE), 30, limit=MAX_DRAFT)
        planner.record_pass(2, 32, one_token_costs(IDLE)(2, 32))
        cost = one_token_costs(ONE_CORE_TAKEN)  # 2 threads: 4.2x slower than idle
        planner.record_pass(2, width, cost(2, width))
        assert planner.plan(0).threads == 1

    @pytest.mark.parametrize("thread_counts", [(1,), (1, 2)])
    def test_drafting_goes_on_after_a_pass_slowed_for_a_moment(
        self, thread_counts: tuple[int, ...]
    ) -> None:
        # One slow 1-token pass (the machine paused), then only 1-token passes for a while:
        # wider passes, not run meanwhile, must not look dearer than they are from then on.
        planner = PassPlanner(thread_counts)
        threads = thread_counts[-1]
        for width in range(1, MAX_DRAFT + 2):
            planner.record_pass(threads, width, 0.020 + 0.001 * width)
        for _ in range(10):
            planner.record_draft(drafted=MAX_DRAFT, kept=MAX_DRAFT)
        planner.record_pass(threads, 1, 10 * 0.021)
        for _ in range(30):
            planner.record_pass(threads, 1, 0.021)
        wider = [planner.pass_seconds(threads, width) for width in range(2, MAX_DRAFT + 2)]
        assert wider == pytest.approx([0.020 + 0.001 * width for width in range(2, MAX_DRAFT + 2)])
        if thread_counts == (1,):  # the lookup planner of the 4-bit drafter: one count
            assert planner.plan(MAX_DRAFT) == PassPlan(threads, MAX_DRAFT)

    def test_a_pass_wider_than_any_timed_tells_nothing_of_the_load(self) -> None:
        # Its cost is guessed low on purpose, so that wider drafts get tried.
        planner = PassPlanner((1, 2))
        run_passes(planner, one_token_costs(IDLE), 30)
        planner.record_pass(2, 20, IDLE[2] * (1 + 19 * 0.7))  # each more row 0.7x a 1-row pass
        assert planner.plan(0).threads == 2

    def test_a_pass_slower_only_by_chance_leaves_the_choice_as_it_was(self) -> None:
        planner = PassPlanner((1, 2))
        run_passes(planner, one_token_costs(IDLE), 30)
        planner.record_pass(2, 1, 2 * IDLE[2])  # a pause of the machine, say
        assert planner.plan(0).threads == 2

    def test_a_prompt_pass_several_times_slower_than_a_decode_pass_moves_the_decode_passes(
        self,
    ) -> None:
        planner = PassPlanner((1, 2))
        run_passes(planner, one_token_costs(IDLE), 30)
        planner.record_pass(2, 32, one_token_costs(IDLE)(2, 32))  # a pass checking a long draft
        idle = planner.one_token_seconds()
        planner.record_prompt_pass(2, 20, one_token_costs(IDLE)(2, 20))  # as fast as decoding
        assert planner.one_token_seconds() == idle
        planner.record_prompt_pass(2, 20, one_token_costs(ONE_CORE_TAKEN)(2, 20))
        assert planner.plan(0).threads == 1

    def test_a_count_that_slows_down_while_checking_drafts_is_left_within_a_few_passes(
        self,
    ) -> None:
        # Passes that check drafted tokens feed several: none of them times a 1-token pass.
        planner = PassPlanner((1, 2))
        for _ in range(10):
            planner.record_draft(drafted=MAX_DRAFT, kept=MAX_DRAFT)
        plans = run_passes(planner, one_token_costs(IDLE), 30, limit=MAX_DRAFT)
        assert plans[-1] == PassPlan(2, MAX_DRAFT)
        plans = run_passes(planner, one_token_costs(ONE_CORE_TAKEN), 5, limit=MAX_DRAFT)
        assert plans[-1].threads == 1 and plans[-1].draft_length > 0

    def test_a_freed_core_is_used_again_within_the_longest_probe_gap(self) -> None:
        planner = PassPlanner((1, 2))
        run_passes(planner, one_token_costs(IDLE), 30)
        run_passes(planner, one_token_costs(ONE_CORE_TAKEN), 500)
        plans = run_passes(planner, one_token_costs(IDLE), PROBE_GAP_MAX + 1)
        assert plans[-1].threads == 2
        assert planner.one_token_seconds()[2] == pytest.approx(IDLE[2])

    def test_a_count_that_keeps_losing_is_probed_less_and_less(self) -> None:
        planner = PassPlanner((1, 2))
        plans = run_passes(planner, one_token_costs(ONE_CORE_TAKEN), 1000)
        probes = [index for index, plan in enumerate(plans) if plan.threads == 2]
        assert len(probes) < 1000 / PROBE_GAP_MAX + 5
        gaps = [later - earlier for earlier, later in itertools.pairwise(probes)]
        assert gaps == sorted(gaps)
        assert gaps[-1] == PROBE_GAP_MAX + 1

    def test_one_thread_count_is_never_probed(self) -> None:
        plans = run_passes(PassPlanner((2,)), one_token_costs(IDLE), 50)
        assert {plan.threads for plan in plans} == {2}

    def test_thread_counts_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            PassPlanner((0, 2))


class TestDrafts:
    def test_nothing_is_drafted_before_a_pass_was_timed(self) -> None:
        assert PassPlanner().plan(MAX_DRAFT).draft_length == 0

    def test_cheap_wide_passes_and_kept_drafts_mean_long_drafts(self) -> None:
        planner = PassPlanner()
        for width in range(1, MAX_DRAFT + 2):
            planner.record_pass(1, width, 0.020 + 0.001 * width)
        for _ in range(10):
            planner.record_draft(drafted=4, kept=4)
        assert planner.plan(MAX_DRAFT).draft_length == MAX_DRAFT
        assert planner.plan(2).draft_length == 2  # never beyond the tokens still wanted

    def test_drafts_that_are_seldom_kept_are_not_worth_a_wider_pass(self) -> None:
        planner = PassPlanner()
        for width in range(1, MAX_DRAFT + 2):
            planner.record_pass(1, width, 0.020 * (1 + 0.4 * (width - 1)))
        for _ in range(10):
            planner.record_draft(drafted=3, kept=0)
        assert planner.kept_share < 0.1
        assert planner.plan(MAX_DRAFT).draft_length == 0

    def test_tokens_after_a_rejected_one_count_for_nothing(self) -> None:
        # The pass checks drafted tokens up to the first it rejects, not the rest.
        short, long = PassPlanner(), PassPlanner()
        for planner, drafted in ((short, 2), (long, MAX_DRAFT)):
            for width in range(1, MAX_DRAFT + 2):
                planner.record_pass(1, width, 0.020 + 0.002 * width)
            for _ in range(10):
                planner.record_draft(drafted=drafted, kept=1)
        assert long.plan(MAX_DRAFT) == short.plan(MAX_DRAFT)
        assert short.plan(MAX_DRAFT).draft_length > 0

    def test_passes_that_cost_as_much_as_separate_ones_are_not_worth_it(self) -> None:
        planner = PassPlanner()
        for width in range(1, MAX_DRAFT + 2):
            planner.record_pass(1, width, 0.020 * width)
        for _ in range(10):
            planner.record_draft(drafted=2, kept=1)
        assert planner.plan(MAX_DRAFT).draft_length == 0

    def test_drafts_follow_the_costs_of_the_chosen_thread_count(self) -> None:
        planner = PassPlanner((1, 2))
        for width in range(1, MAX_DRAFT + 2):
            planner.record_pass(1, width, 0.050 * width)  # wide passes cost as much as single ones
            planner.record_pass(2, width, 0.040 + 0.001 * width)  # and here they are cheap
        for _ in range(10):
            planner.record_draft(drafted=4, kept=4)
        assert planner.plan(MAX_DRAFT) == PassPlan(2, MAX_DRAFT)


class TestPassSeconds:
    def test_a_width_not_timed_lies_between_the_timed_ones_around_it(self) -> None:
        planner = PassPlanner()
        for width, seconds in ((1, 0.020), (5, 0.030), (9, 0.050)):
            planner.record_pass(1, width, seconds)
        assert planner.pass_seconds(1, 3) == pytest.approx(0.025)
        assert planner.pass_seconds(1, 7) == pytest.approx(0.040)
        assert planner.pass_seconds(1, 9) == 0.050

    def test_beyond_the_widest_timed_a_token_costs_what_it_did_up_to_there(self) -> None:
        planner = PassPlanner()
        planner.record_pass(1, 1, 0.020)
        planner.record_pass(1, 5, 0.024)  # 1 ms a token
        assert planner.pass_seconds(1, 32) == pytest.approx(0.024 + 27 * 0.001)


class TestPromptThreads:
    def test_prompts_run_on_all_threads_until_a_decode_pass_was_timed(self) -> None:
        assert PassPlanner((1, 2)).prompt_threads() == 2

    def test_prompts_run_on_fewer_threads_while_decode_passes_are_much_slower_on_more(
        self,
    ) -> None:
        planner = PassPlanner((1, 2))
        run_passes(planner, one_token_costs(IDLE), 30)
        assert planner.prompt_threads() == 2
        # Decode passes move to 1 thread after 2 slow ones; the next probe of 2 threads (8
        # passes later) times how much slower they now are.
        run_passes(planner, one_token_costs(ONE_CORE_TAKEN), 2 + PROBE_GAP_MIN)
        assert planner.prompt_threads() == 1

    def test_prompts_whose_bits_depend_on_the_threads_stay_on_all_of_them(self) -> None:
        # fp32: decode passes move to 1 thread while a core is taken, a prompt's pass may not
        # (torch's products of many rows round differently on 1 and 2 threads).
        planner = PassPlanner((1, 2), prompts_on_all_threads=True)
        run_passes(planner, one_token_costs(ONE_CORE_TAKEN), 2 + PROBE_GAP_MIN)
        assert planner.plan(0).threads == 1
        assert planner.prompt_threads() == 2

    def test_a_prompt_pass_with_a_decode_pass_bits_moves_as_decode_passes_do(self) -> None:
        # A keystroke's few new prompt tokens: as a decode pass, not as a long prompt.
        planner = PassPlanner((1, 2), prompts_on_all_threads=True)
        run_passes(planner, one_token_costs(ONE_CORE_TAKEN), 2 + PROBE_GAP_MIN)
        assert planner.prompt_threads(bits_as_decode_pass=True) == 1
        run_passes(planner, one_token_costs(IDLE), 4 * PROBE_GAP_MIN)  # the core is free again
        assert planner.prompt_threads(bits_as_decode_pass=True) == 2

    def test_prompts_run_on_all_threads_while_decode_passes_are_about_as_fast_on_fewer(
        self,
    ) -> None:
        # A prompt's pass shares its arithmetic out: on an idle CPU it is faster on 2 threads
        # even when a 1-token pass is a little faster on 1.
        planner = PassPlanner((1, 2))
        run_passes(planner, one_token_costs(IDLE_EVEN), 30)
        assert planner.plan(0).threads == 1
        assert planner.prompt_threads() == 2

    def test_prompts_run_on_the_most_threads_not_much_slower_than_the_fastest(self) -> None:
        planner = PassPlanner((1, 2, 4))
        run_passes(planner, one_token_costs({1: 0.030, 2: 0.020, 4: 0.029}), 30)
        assert planner.prompt_threads() == 4
        planner = PassPlanner((1, 2, 4))
        run_passes(planner, one_token_costs({1: 0.030, 2: 0.020, 4: 0.031}), 30)
        assert planner.prompt_threads() == 2
