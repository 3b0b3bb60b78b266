"""Tokens drafted by the 4-bit model of the same weights, for fp32 decode passes to check.

fp32's greedy text is the reference, and its decode passes read every weight once per pass. The
4-bit copy of the same decoder reads about a quarter of those bytes (SmolLM2 on 2 cores: a pass
in ~6.5 ms against ~41 ms) and, run over the keys and values fp32 computed for the text so far,
picks fp32's own next token almost every time (98 % of the drafted tokens over the 17 reference
prompts). So it drafts a few tokens, one cheap pass each (where the text repeats itself, a pass
also checks tokens looked up in it, as int4's decode passes do), and one fp32 pass over the last
chosen token and the draft checks them all (see `drafts`): the text stays fp32's to the bit, in
fewer fp32 passes (SmolLM2, those 17 prompts: 813 tokens in 571-577 passes and 22.6-23.5 s, with
drafts in 74-89 passes and 10.2-11.7 s, the same 17 texts). The draft's keys and values are
written after the run's own and dropped again before the checking pass, which writes fp32's.

How many tokens to draft is planned like the draft length of `pass_planner`: from the share of
recently checked drafted tokens that were kept, the measured time of drafting a token and that of
a checking pass of each width.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from transformers import DynamicCache

from phi3_lsp.drafts import LookedUp, TokenLookup
from phi3_lsp.fp32_products import ROWS_AT_MOST
from phi3_lsp.kv_cache import GrowingCache, cache_argument, truncate
from phi3_lsp.pass_planner import PassPlanner, checked_tokens

MAX_MODEL_DRAFT = ROWS_AT_MOST - 1
"""A checking pass feeds the draft and one more token: up to the rows our fp32 kernel takes in
one read of each weight, the width at which a row's bits are those of a one-token pass."""

_DECAY = 0.9
"""Weight of older drafts and timings: recent text matters most."""
_PRIOR_CHECKED, _PRIOR_KEPT = 2.0, 1.8
"""Before any draft is checked, nine in ten checked tokens are assumed kept (measured: 99.4 %)."""
_GUESSED_DRAFT_SHARE = 0.25
"""Until a draft pass has been timed, it is guessed to cost this share of a one-token fp32
pass: a 4-bit weight is an eighth of an fp32 one, a bf16-held one's quarter."""

PROBE_AFTER_PASSES = 16
"""While drafting does not pay, one token is still drafted after this many passes without a
draft, so that the kept share follows the text (a pass of 4-bit weights: ~1/4 of an fp32 one,
so at most ~1.5 % more time where drafts never pay)."""

PassSeconds = Callable[[int], float]
"""The seconds of a checking pass over that many tokens (measured or guessed)."""


class DraftPlanner:
    """Chooses how many tokens the 4-bit model drafts, for the most checked tokens a second.

    If each drafted token is kept with probability p (once the one before it was), drafting k
    tokens yields 1 + p + ... + p^k tokens, for k draft passes and a checking pass over k + 1.
    """

    def __init__(self) -> None:
        self._checked = _PRIOR_CHECKED
        self._kept = _PRIOR_KEPT
        self._token_seconds: dict[int, float] = {}
        """Recent seconds of drafting one token, per torch thread count."""
        self._passes_without_draft = 0

    @property
    def kept_share(self) -> float:
        """The share of recently checked drafted tokens that fp32's own choice confirmed: p."""
        return self._kept / self._checked

    def length(self, threads: int, limit: int, checking_pass: PassSeconds) -> int:
        """The draft length (at most `limit`) that yields the most tokens per second; 1 now and
        then where none does (see `PROBE_AFTER_PASSES`)."""
        length = self._best_length(threads, limit, checking_pass)
        if length == 0 and limit > 0 and self._passes_without_draft >= PROBE_AFTER_PASSES:
            length = 1
        self._passes_without_draft = 0 if length else self._passes_without_draft + 1
        return length

    def _best_length(self, threads: int, limit: int, checking_pass: PassSeconds) -> int:
        draft_token = self._token_seconds.get(threads, checking_pass(1) * _GUESSED_DRAFT_SHARE)
        share = self.kept_share
        best_length, best_rate = 0, 1.0 / checking_pass(1)
        expected_tokens = 1.0
        for length in range(1, min(MAX_MODEL_DRAFT, limit) + 1):
            expected_tokens += share**length
            rate = expected_tokens / (length * draft_token + checking_pass(length + 1))
            if rate > best_rate:
                best_length, best_rate = length, rate
        return best_length

    def record_draft(self, drafted: int, kept: int) -> None:
        """Note that a checking pass confirmed `kept` of `drafted` tokens."""
        if drafted:
            self._checked = self._checked * _DECAY + checked_tokens(drafted, kept)
            self._kept = self._kept * _DECAY + kept

    def record_drafting(self, threads: int, tokens: int, seconds: float) -> None:
        """Note that drafting `tokens` tokens on `threads` threads took `seconds`."""
        if tokens:
            each = seconds / tokens
            before = self._token_seconds.get(threads)
            self._token_seconds[threads] = (
                each if before is None else before * _DECAY + each * (1 - _DECAY)
            )


class ModelDrafter:
    """Drafts greedy tokens with a 4-bit model over another model's KV cache."""

    def __init__(self, model: nn.Module) -> None:
        """`model`: the 4-bit form of the checking model (same config, same tokens)."""
        self._model = model
        self._cache_argument = cache_argument(model)
        self.planner = DraftPlanner()
        self._lookup_planners: dict[int, PassPlanner] = {}
        """How many tokens from the text a draft pass checks, per torch thread count: the
        planning of a 4-bit model's own decode passes (see `pass_planner`)."""

    def draft(
        self,
        cache: DynamicCache,
        held: int,
        last_token: int,
        count: int,
        before_pass: Callable[[], None],
        ends: frozenset[int] = frozenset(),
        text: TokenLookup | None = None,
    ) -> list[int]:
        """Up to `count` tokens after `last_token`, which follows the `held` positions of
        `cache`; the cache holds exactly those again afterwards. `before_pass` runs before each
        pass (it may raise to stop drafting). Drafting stops before a token of `ends`: the text
        ends there, and a checking pass that picks it needs none of what would follow.

        `text`: the text so far, up to `last_token`. Where it repeats itself, a pass also
        checks tokens drafted from it (see `drafts`) and keeps those the 4-bit model's own
        choice confirms: the same draft, in fewer passes."""
        started = time.perf_counter()
        try:
            drafted, chosen = self._passes(cache, last_token, count, before_pass, ends, text)
        finally:
            truncate(cache, held)
        self.planner.record_drafting(torch.get_num_threads(), chosen, time.perf_counter() - started)
        return drafted

    def warm_up(self, token: int) -> None:
        """Two untimed passes after `token` alone: the first passes read the 4-bit weights into
        memory and set up kernels and buffers, here rather than in a completion.

        Only the drafter's own passes: checking passes are fp32's, already warm (Phi-3-mini-
        sized: a warm-up through the decoder spent ~2 s of 2.35 s on three fp32 passes).
        """
        self._passes(GrowingCache(), token, 2, lambda: None, frozenset(), None)

    def _passes(
        self,
        cache: DynamicCache,
        token: int,
        count: int,
        before_pass: Callable[[], None],
        ends: frozenset[int],
        text: TokenLookup | None,
    ) -> tuple[list[int], int]:
        """The tokens the passes choose after `token`, up to `count` or before one of `ends`,
        and how many they chose (the end token included)."""
        threads = torch.get_num_threads()
        planner = self._lookup_planners.setdefault(threads, PassPlanner((threads,)))
        drafted: list[int] = []
        chosen = 0
        while len(drafted) < count:
            before_pass()
            room = count - len(drafted) - 1  # beyond the token the pass chooses itself
            looked_up = (
                LookedUp.from_text(text, planner.plan(room).draft_length, room, drafted)
                if text is not None
                else LookedUp([], [])
            )
            fed = [token, *looked_up.draft]
            started = time.perf_counter()
            output = self._model(
                input_ids=torch.tensor([fed], dtype=torch.long),
                use_cache=True,
                logits_to_keep=len(fed),
                **{self._cache_argument: cache},
            )
            planner.record_pass(threads, len(fed), time.perf_counter() - started)
            choices = output.logits[0].argmax(dim=-1).tolist()
            kept = looked_up.record(planner, choices)
            truncate(cache, cache.get_seq_length() - (len(looked_up.draft) - kept))
            for new_token in [*looked_up.draft[:kept], choices[kept]]:
                chosen += 1
                if new_token in ends:
                    return drafted, chosen
                drafted.append(new_token)
            token = drafted[-1]  # the next pass feeds it
        return drafted, chosen
