"""How to run each decode pass: on how many torch threads, and checking how many drafted tokens.

Both choices trade what a pass costs against what it yields, and the costs are only known by
timing passes on this machine, as it is loaded now.

Threads. Between two matrix products torch's threads wait briefly before they sleep (see
`openmp`), so on an idle 2-core CPU a decode step of SmolLM2 in int4 takes ~55 ms on 2
threads and ~70 ms on 1. When another process keeps a core busy (a build, a test run), every
product of a 2-thread step waits for the thread that lost its core: ~230 ms a step, against
~65 ms on 1 thread. Nothing tells the server when that starts or ends, so the planner runs the
thread count whose recent passes were fastest, and now and then times one pass on each other
count (a probe): often while the counts are close, less and less often while a count keeps
losing. A pass several times slower than its kind tells at once that a core was taken.

Drafts. A pass over more tokens costs more (on this CPU's int4 kernel, a pass over 3 tokens
~1.4x one over 1), so the planner drafts only as many tokens as pay for themselves, from the
share of checked drafted tokens recently kept and the measured time of passes of each width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_DRAFT = 4
"""Beyond this, the kernel's cost per token grows faster than what a draft typically keeps."""

_DECAY = 0.9
"""Weight of older drafts in the kept share and of older timings: recent text matters most."""
_PRIOR_CHECKED, _PRIOR_KEPT = 2.0, 1.0
"""Before any draft is checked, half of the checked tokens are assumed kept."""
_GUESSED_EXTRA_COST = 0.15
"""Until a width has been timed, each extra token is guessed to add this share of a 1-token
pass: optimistic, so that every useful width gets tried and timed."""

PROBE_GAP_MIN, PROBE_GAP_MAX = 8, 64
"""Passes between probes of a thread count not in use: the gap doubles each time the probe
loses. 64 passes of SmolLM2 are 3-5 s, so the planner notices a freed core within seconds."""
PROMPT_SLOWDOWN_ALLOWED = 1.5
"""A prompt's pass runs on the most threads whose 1-token passes take at most this multiple of
the fastest count's: on an idle CPU they take about as long (1.0-1.1x), while another process
keeps a core busy far longer (2.1-2.8x on SmolLM2 in int4, 2-core AVX-512 EPYC)."""
SUDDEN_SLOWDOWN = 3.0
"""A pass this many times slower than its thread count's passes of its width were says the load
changed: that count's 1-token timing is scaled to it at once, where averaged in it would keep
the count chosen for several more slow passes (SmolLM2 fp32, 2 threads, another process
spinning on a core: passes 5-10x slower, 0.36-0.74 s each, three of them before the move to
1 thread)."""
STALE_AFTER = 2
"""A thread count not run for more passes than this has timings from another load: its next
pass replaces them instead of being averaged in."""


def checked_tokens(drafted: int, kept: int) -> int:
    """How many of `drafted` tokens a pass that kept `kept` of them checked.

    A drafted token is kept only once all before it were, so the pass checks those it keeps
    and the first it rejects; the rest were never checked. Counted as rejected, they would make
    a long draft rejected early look far worse than its drafter is (SmolLM2's 4-bit drafts on
    the reference prompts and the benchmark's windows: 99.4 % of checked tokens kept, 93.8 % of
    drafted ones), and the planners, which take each checked token as kept with one probability
    p, would draft a few tokens at a time where long drafts pay.
    """
    return kept + (kept < drafted)


@dataclass(frozen=True)
class PassPlan:
    """How to run the next decode pass."""

    threads: int
    draft_length: int
    """Drafted tokens to check beside the next one (0: feed one token)."""
    probe: bool = False
    """The pass times a thread count: it feeds one token, whatever could be drafted."""


class PassPlanner:
    """Plans decode passes for the most tokens per second, from timings of the passes so far.

    If each drafted token is kept with probability p (once the one before it was), a pass
    with k drafted tokens yields 1 + p + ... + p^k tokens, at the measured cost of a pass
    over k + 1 tokens on the chosen thread count.
    """

    def __init__(
        self, thread_counts: Sequence[int] = (1,), *, prompts_on_all_threads: bool = False
    ) -> None:
        """`prompts_on_all_threads`: passes over a prompt run on the most threads (their bits
        depend on the thread count where only decode passes' do not), but for those over as
        few tokens as a decode pass feeds (see `prompt_threads`)."""
        if not thread_counts or min(thread_counts) < 1:
            raise ValueError(f"thread counts must be positive, not {list(thread_counts)}")
        self.thread_counts = tuple(sorted(set(thread_counts)))
        self.prompts_on_all_threads = prompts_on_all_threads
        self._checked = _PRIOR_CHECKED
        self._kept = _PRIOR_KEPT
        self._pass_seconds: dict[int, dict[int, float]] = {t: {} for t in self.thread_counts}
        """Recent seconds of a decode pass, per thread count and number of tokens fed."""
        self._passes = 0
        self._last_pass: dict[int, int] = {}
        """The number of the latest pass run on each thread count."""
        self._probe_gap = dict.fromkeys(self.thread_counts, PROBE_GAP_MIN)

    @property
    def kept_share(self) -> float:
        """The share of recently checked drafted tokens that the model's own choice confirmed."""
        return self._kept / self._checked

    def one_token_seconds(self) -> dict[int, float]:
        """The recent cost of a 1-token pass on each thread count timed so far."""
        return {
            threads: timings[1] for threads, timings in self._pass_seconds.items() if 1 in timings
        }

    def prompt_threads(self, *, bits_as_decode_pass: bool = False) -> int:
        """The thread count for a pass over a prompt: the most threads whose recent 1-token
        passes took at most `PROMPT_SLOWDOWN_ALLOWED` times the fastest count's.

        A pass over many tokens is arithmetic that threads share, where a 1-token pass is
        mostly waiting on memory and on the work around each product: on an idle 2-core CPU,
        SmolLM2's int4 decode passes took 14.6 ms on 2 threads and 14.7 ms on 1, but a
        100-token pass 158 ms and 199 ms (~500 tokens: 0.86-0.93 s and 1.47-1.50 s). A busy
        core slows both alike: with another process spinning on one core, 40-47 ms against
        17-22 ms, and 442-670 ms against 284-291 ms; a ~400-token prompt and 50 new tokens
        once took 11.7 s with the prompt on 2 threads and 4.5 s on 1. With no decode pass
        timed yet, or with `prompts_on_all_threads` unless `bits_as_decode_pass` (a pass over a
        few prompt tokens, whose bits depend on the thread count no more than a decode pass's),
        all threads.
        """
        costs = self.one_token_seconds()
        if not costs or (self.prompts_on_all_threads and not bits_as_decode_pass):
            return self.thread_counts[-1]
        allowed = min(costs.values()) * PROMPT_SLOWDOWN_ALLOWED
        return max(threads for threads, seconds in costs.items() if seconds <= allowed)

    def plan(self, draft_limit: int) -> PassPlan:
        """The next pass: a probe of a thread count if one is due, else the fastest count with
        the draft length (at most `draft_limit`) that yields the most tokens per second."""
        untimed = [t for t in self.thread_counts if 1 not in self._pass_seconds[t]]
        if untimed:
            return PassPlan(untimed[-1], 0, probe=True)
        fastest = self._fastest_threads()
        for threads in self.thread_counts:
            if threads != fastest and self._passes_since(threads) >= self._probe_gap[threads]:
                return PassPlan(threads, 0, probe=True)
        return PassPlan(fastest, self._draft_length(fastest, draft_limit))

    def record_pass(self, threads: int, width: int, seconds: float) -> None:
        """Note that a decode pass over `width` tokens on `threads` threads took `seconds`."""
        probed = 1 not in self._pass_seconds[threads] or threads != self._fastest_threads()
        timings = self._pass_seconds[threads]
        if self._passes_since(threads) > STALE_AFTER:
            timings.clear()
        if not self._rescaled_for_a_slowdown(threads, width, seconds):
            before = timings.get(width)
            timings[width] = seconds if before is None else before * _DECAY + seconds * (1 - _DECAY)
            if before is not None and width != 1 and 1 in timings:
                # A core lost to another process slows passes of every width alike, and the
                # thread count is chosen on 1-token passes, rare while drafts are checked.
                timings[1] *= timings[width] / before
        self._passes += 1
        self._last_pass[threads] = self._passes
        if probed:
            won = threads == self._fastest_threads()
            gap = self._probe_gap[threads]
            self._probe_gap[threads] = PROBE_GAP_MIN if won else min(2 * gap, PROBE_GAP_MAX)

    def record_prompt_pass(self, threads: int, width: int, seconds: float) -> None:
        """Note that a pass over `width` prompt tokens, of a decode pass's bits, took `seconds`
        on `threads` threads. It keeps fewer logits than a decode pass of its width, so it only
        tells of a sudden slowdown (see `SUDDEN_SLOWDOWN`): the decode passes after it, the
        first a core lost shows in, move at once."""
        self._rescaled_for_a_slowdown(threads, width, seconds)

    def _rescaled_for_a_slowdown(self, threads: int, width: int, seconds: float) -> bool:
        """Scale the 1-token timing of `threads` to a pass of `width` tokens that took `seconds`,
        if it was `SUDDEN_SLOWDOWN` times slower than such passes were; returns whether it was.
        Not for a width beyond the widest timed, whose guessed cost is optimistic on purpose (see
        `pass_seconds`), nor where there is no other thread count to move to."""
        timings = self._pass_seconds[threads]
        if len(self.thread_counts) < 2 or 1 not in timings or width > max(timings):
            return False
        slowdown = seconds / self.pass_seconds(threads, width)
        if slowdown < SUDDEN_SLOWDOWN:
            return False
        # The count is chosen on its 1-token passes. Other widths keep their timings until they
        # run again: scaled too, the widths not run while the load passed would stay dear, and
        # drafts of them would never be tried again.
        timings[1] *= slowdown
        timings[width] = seconds
        return True

    def record_draft(self, drafted: int, kept: int) -> None:
        """Note that a pass confirmed `kept` of `drafted` tokens (also of tokens it was not fed:
        what a draft would have been)."""
        if drafted:
            self._checked = self._checked * _DECAY + checked_tokens(drafted, kept)
            self._kept = self._kept * _DECAY + kept

    def _passes_since(self, threads: int) -> int:
        return self._passes - self._last_pass.get(threads, 0)

    def _fastest_threads(self) -> int:
        """The timed thread count with the cheapest 1-token pass (ties: fewer threads)."""
        costs = self.one_token_seconds()
        if not costs:
            return self.thread_counts[-1]
        return min(costs, key=lambda threads: (costs[threads], threads))

    def _draft_length(self, threads: int, limit: int) -> int:
        share = self.kept_share
        best_length, best_rate = 0, 1.0 / self.pass_seconds(threads, 1)
        for length in range(1, min(MAX_DRAFT, limit) + 1):
            expected_tokens = sum(share**kept for kept in range(length + 1))
            rate = expected_tokens / self.pass_seconds(threads, length + 1)
            if rate > best_rate:
                best_length, best_rate = length, rate
        return best_length

    def pass_seconds(self, threads: int, width: int) -> float:
        """Seconds of a pass over `width` tokens: measured; else on the line between the
        nearest widths measured on either side; beyond the widest measured, each more token at
        what one cost up to it, or `_GUESSED_EXTRA_COST` of a 1-token pass if that is less.

        Optimistic, so that a wider pass gets tried and timed: our fp32 kernel's passes cost
        ~1 ms a token more up to 5 tokens and ~2.3 ms up to 32 (SmolLM2), so a guess from the
        1-token pass alone kept drafts of 4 tokens for the first answers after a load."""
        timings = self._pass_seconds[threads]
        measured = timings.get(width)
        if measured is not None:
            return measured
        below = max(timed for timed in timings if timed < width)
        above = min((timed for timed in timings if timed > width), default=None)
        if above is not None:
            share = (width - below) / (above - below)
            return timings[below] + share * (timings[above] - timings[below])
        per_token = timings[1] * _GUESSED_EXTRA_COST
        if below > 1:
            per_token = min(per_token, max(0.0, (timings[below] - timings[1]) / (below - 1)))
        return timings[below] + per_token * (width - below)
