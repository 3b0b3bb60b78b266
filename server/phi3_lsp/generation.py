"""Greedy decoding in a plain loop, with the KV cache of the previous prompt reused.

Passes over the uncached part of the prompt (prefill, in chunks of up to
`PREFILL_CHUNK_TOKENS`), then one pass per new token, each time taking the most likely next
token (argmax); a pass can also check tokens drafted from the text so far (see `drafts`) or
by a 4-bit copy of the model (see `model_drafts`), and keeps those the argmax confirms; each
pass runs on the thread count and with the draft length that `pass_planner` chooses. A stop
event is checked before every decoder layer (see `stoppable_passes`), so a cancelled request
returns within one layer of one pass (or, if the stop spares it, after the prompt chunk in
flight), and the prompt chunks it finished stay cached for the next request. Caches are kept
per key (a document URI): when the next prompt of that document shares a token prefix with the
last one, only the tail is computed.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from transformers import DynamicCache

from phi3_lsp.drafts import LookedUp, TokenLookup
from phi3_lsp.kv_cache import GrowingCache, cache_argument, prompt_pass, truncate
from phi3_lsp.model_drafts import MAX_MODEL_DRAFT, ModelDrafter
from phi3_lsp.pass_planner import PassPlan, PassPlanner
from phi3_lsp.prefixes import common_prefix_length
from phi3_lsp.prompt_cache import PromptCache
from phi3_lsp.prompt_progress import PromptProgress, PromptReadCallback
from phi3_lsp.stop_requests import TokenLimit
from phi3_lsp.stoppable_passes import LayerStops, PassStopped
from phi3_lsp.tokens import ContinuationStream, DocumentTokenizer

CHECKED_ROWS_AT_MOST = MAX_MODEL_DRAFT + 1
"""The most tokens a decode pass feeds: the last chosen one and a 4-bit model's draft."""

FinishReason = Literal["length", "eos", "line", "stopped"]
TextCallback = Callable[[str], None]

PREFILL_CHUNK_TOKENS = 512
"""Prompt positions per prefill pass; chunks end at multiples of it, wherever reuse began.

A stopped prompt keeps the chunks it finished. Measured on SmolLM2 (2 cores, 1,500 tokens, fp32
and int4): chunks of 512 and 1,024 take the time of one pass and give the same logits to the
bit; chunks of 256 took 10-25 % longer."""


@dataclass(frozen=True)
class Generation:
    """A finished greedy continuation and what it cost."""

    text: str
    """Only the new text, with its leading space if the model produced one."""
    token_ids: tuple[int, ...]
    """The new tokens, without the end-of-sequence token that stopped them."""
    prompt_tokens: int
    reused_prompt_tokens: int
    """Prompt tokens whose keys and values came from the cache instead of being computed."""
    prefill_seconds: float
    decode_seconds: float
    decoded_tokens: int
    """Tokens of the answer that decode passes chose: all but the first (the prefill's), and
    the end-of-sequence token that stopped it."""
    decode_passes: int
    """Forward passes after the prefill: fewer than `decoded_tokens` when drafts were kept."""
    finish_reason: FinishReason

    @property
    def decode_tokens_per_second(self) -> float | None:
        """Decode speed, or None when there was no decode pass."""
        if self.decode_passes == 0 or self.decode_seconds <= 0:
            return None
        return self.decoded_tokens / self.decode_seconds


@dataclass(frozen=True)
class PromptRead:
    """What `GreedyDecoder.read` did with a prompt."""

    prompt_tokens: int
    cached_tokens: int
    """Prompt tokens whose keys and values are now kept (at most all but the last)."""
    read_tokens: int
    """Of those, the ones this read computed; 0 when the cache already held them. A read that
    was stopped keeps fewer than all but the last."""


class GreedyDecoder:
    """Runs greedy generation on one causal LM. Not thread-safe: use it from one thread."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: DocumentTokenizer,
        eos_token_ids: frozenset[int],
        prompt_cache: PromptCache,
        *,
        drafts_until: int = 0,
        pass_planner: PassPlanner | None = None,
        short_prompts_on_any_threads: bool = False,
    ) -> None:
        """`drafts_until`: the context length (in tokens) up to which a pass checking drafted
        tokens picks exactly what one-token passes would (0: never draft). `pass_planner`:
        by default every pass runs on the current torch thread count.
        `short_prompts_on_any_threads`: a prompt pass as short as a decode pass gives the same
        bits on any thread count, where the planner keeps longer ones on all threads (see
        `_bits_as_decode_pass`)."""
        self._model = model
        self._tokenizer = tokenizer
        self._eos_token_ids = eos_token_ids
        self._prompt_cache = prompt_cache
        accepted = inspect.signature(model.forward).parameters
        self._cache_argument = cache_argument(model)
        # Models that accept `logits_to_keep` skip the vocabulary projection for all prompt
        # positions but the last: a large saving on long prompts.
        self._keeps_logits = "logits_to_keep" in accepted
        self.planner = pass_planner or PassPlanner((torch.get_num_threads(),))
        self.drafts_until = drafts_until
        self._short_prompts_on_any_threads = short_prompts_on_any_threads
        self.drafter: ModelDrafter | None = None
        """Drafts tokens with a 4-bit copy of the model, in place of drafts from the text."""
        self._stops = LayerStops(model)
        self._progress = PromptProgress(model)

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        stop_event: threading.Event | None = None,
        on_text: TextCallback | None = None,
        cache_key: str | None = None,
        one_line: bool = False,
        on_prompt_read: PromptReadCallback | None = None,
        limit: TokenLimit | None = None,
    ) -> Generation:
        """Greedy continuation of `prompt_ids`; see `ModelEngine.generate`."""
        if not prompt_ids:
            raise ValueError("The prompt is empty: generation needs at least one token.")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {max_new_tokens}.")
        run, reused = self._start_run(prompt_ids, cache_key, on_text)
        started = time.perf_counter()
        prefilled: float | None = None
        with torch.inference_mode(), self._stops.watching(stop_event), _threads_restored():
            try:
                logits = self._prefill(run, prompt_ids, on_prompt_read)
                prefilled = time.perf_counter()
                limit = TokenLimit(max_new_tokens) if limit is None else limit
                limit.lower_to(max_new_tokens)
                finish = self._decode(run, logits, limit, one_line)
            except PassStopped:
                # The stopped pass's finished layers wrote positions that `fed_ids` lacks.
                truncate(run.cache, len(run.fed_ids))
                finish = "stopped"
        ended = time.perf_counter()
        prefill_ended = ended if prefilled is None else prefilled
        run.emit(run.stream.finish())
        if cache_key is not None:
            self._prompt_cache.put(cache_key, run.fed_ids, run.cache)
        return Generation(
            text=self._tokenizer.decode_continuation(prompt_ids, run.new_ids),
            token_ids=tuple(run.new_ids),
            prompt_tokens=len(prompt_ids),
            reused_prompt_tokens=reused,
            prefill_seconds=prefill_ended - started,
            decode_seconds=ended - prefill_ended,
            decoded_tokens=max(0, len(run.new_ids) - 1 + (finish == "eos")),
            decode_passes=run.decode_passes,
            finish_reason=finish,
        )

    def read(
        self,
        prompt_ids: Sequence[int],
        *,
        cache_key: str,
        stop_event: threading.Event | None = None,
        on_prompt_read: PromptReadCallback | None = None,
    ) -> PromptRead:
        """Compute the keys and values of `prompt_ids` and keep them under `cache_key`, so that
        a later `generate` of a prompt that begins with them reads only what follows.

        The last token is left out: `generate` always computes it again, its logits give the
        first new token. Nothing runs when the cache already covers the rest (it may hold a
        continuation after them, which the next prompt may also reuse: it is left whole). A
        stop keeps the chunks read so far, as in `generate`.
        """
        wanted = len(prompt_ids) - 1
        cached = self._prompt_cache.reusable(cache_key, prompt_ids)
        if cached >= wanted:
            return PromptRead(len(prompt_ids), cached, read_tokens=0)
        run, reused = self._start_run(prompt_ids, cache_key, on_text=None)
        with torch.inference_mode(), self._stops.watching(stop_event), _threads_restored():
            try:
                self._prefill(run, prompt_ids[:wanted], on_prompt_read)
            except PassStopped:
                truncate(run.cache, len(run.fed_ids))
        self._prompt_cache.put(cache_key, run.fed_ids, run.cache)
        return PromptRead(len(prompt_ids), len(run.fed_ids), len(run.fed_ids) - reused)

    def _start_run(
        self, prompt_ids: Sequence[int], cache_key: str | None, on_text: TextCallback | None
    ) -> tuple[_Run, int]:
        """A run that begins with what the cache under `cache_key` holds of `prompt_ids`; also
        returns how many prompt tokens that is."""
        cache, reused = None, 0
        if cache_key is not None:
            cache, reused = self._prompt_cache.take(cache_key, prompt_ids)
        run = _Run(
            cache=cache if cache is not None else GrowingCache(),
            fed_ids=list(prompt_ids[:reused]),
            stream=self._tokenizer.stream(prompt_ids),
            on_text=on_text,
        )
        return run, reused

    def _prefill(
        self, run: _Run, prompt_ids: Sequence[int], on_read: PromptReadCallback | None
    ) -> torch.Tensor:
        """Feed the prompt after what the cache holds, in chunks ending at multiples of
        `PREFILL_CHUNK_TOKENS`; return the logits of its last position."""
        logits = None
        first = len(run.fed_ids)
        while (start := len(run.fed_ids)) < len(prompt_ids):
            end = min(len(prompt_ids), (start // PREFILL_CHUNK_TOKENS + 1) * PREFILL_CHUNK_TOKENS)
            self._stops.check()
            as_decode_pass = self._bits_as_decode_pass(end - start, end)
            threads = self.planner.prompt_threads(bits_as_decode_pass=as_decode_pass)
            torch.set_num_threads(threads)
            started = time.perf_counter()
            with (
                self._stops.prompt_pass(prompt_ids[:end]),
                self._progress.pass_over(
                    on_read, start - first, end - start, len(prompt_ids) - first
                ),
                prompt_pass(run.cache),
            ):
                logits = self._feed(run, prompt_ids[start:end], keep=1)
            if as_decode_pass:  # a core lost since the last pass shows here first
                self.planner.record_prompt_pass(threads, end - start, time.perf_counter() - started)
        assert logits is not None  # the cache never holds the last prompt token (`take`)
        return logits

    def _decode(
        self, run: _Run, logits: torch.Tensor, limit: TokenLimit, one_line: bool
    ) -> FinishReason:
        """Pick tokens until EOS, the token limit or (`one_line`) a line break, checking
        drafted tokens on the way (see `drafts` and `model_drafts`): each pass feeds the last
        chosen token and any drafted ones. A stop raises `PassStopped`."""
        drafter = self.drafter
        # Index the text only where drafts are checked: drafts come from it, or the 4-bit
        # drafter checks tokens from it.
        lookup = TokenLookup(run.fed_ids if self.drafts_until else ())
        chosen = [int(torch.argmax(logits[-1]))]
        while True:
            # `chosen`: tokens now certain, all fed to the model but the last.
            for token_id in chosen:
                if token_id in self._eos_token_ids:
                    return "eos"
                run.new_ids.append(token_id)
                piece = run.stream.push(token_id)
                run.emit(piece)
                if len(run.new_ids) >= limit.tokens:
                    return "length"
                if one_line and ("\n" in piece or "\r" in piece):  # "\r": LSP's lone break too
                    return "line"
            lookup.extend(chosen)
            self._stops.check()  # also before every layer, but a pass would first be planned
            max_new_tokens = limit.tokens  # lowered meanwhile, perhaps below what is made
            if len(run.new_ids) >= max_new_tokens:
                return "length"
            room = min(
                max_new_tokens - len(run.new_ids) - 1,  # the pass itself adds one token
                self.drafts_until - len(run.fed_ids) - 1,
            )
            plan = self.planner.plan(room)
            torch.set_num_threads(plan.threads)
            looked_up = LookedUp([], [])
            if drafter is not None:
                length = 0 if plan.probe else self._model_draft_length(drafter, plan, room)
                draft = (
                    drafter.draft(
                        run.cache,
                        len(run.fed_ids),
                        chosen[-1],
                        length,
                        self._stops.check,
                        self._eos_token_ids,
                        lookup,
                    )
                    if length
                    else []
                )
            else:
                looked_up = LookedUp.from_text(lookup, plan.draft_length, room)
                draft = looked_up.draft
            draft = self._before_end(draft)
            started = time.perf_counter()
            logits = self._feed(run, [chosen[-1], *draft])
            run.decode_passes += 1
            self.planner.record_pass(plan.threads, 1 + len(draft), time.perf_counter() - started)
            choices = logits.argmax(dim=-1).tolist()
            kept = common_prefix_length(draft, choices)
            if drafter is not None:
                drafter.planner.record_draft(len(draft), kept)
            else:
                looked_up.record(self.planner, choices)
            if kept < len(draft):
                run.forget_last(len(draft) - kept)
            chosen = [*draft[:kept], choices[kept]]

    def _bits_as_decode_pass(self, rows: int, context: int) -> bool:
        """Whether a prompt pass over `rows` tokens ending at `context` tokens gives the same
        bits on any thread count, as a decode pass checking drafts does: as few rows, within the
        context where drafts are checked, where short passes run alike on any thread count. A
        keystroke's prompt pass, or a short prompt's, may then run where decode passes do: on 1
        thread while another process keeps a core busy, where every product on 2 threads waits
        for the thread that lost its core."""
        return (
            self._short_prompts_on_any_threads
            and rows <= CHECKED_ROWS_AT_MOST
            and context <= self.drafts_until
        )

    def _before_end(self, draft: list[int]) -> list[int]:
        """`draft` up to its first end-of-sequence token: a pass that picks that token needs
        none of what follows (the text ends there)."""
        for index, token_id in enumerate(draft):
            if token_id in self._eos_token_ids:
                return draft[:index]
        return draft

    def _model_draft_length(self, drafter: ModelDrafter, plan: PassPlan, room: int) -> int:
        return drafter.planner.length(
            plan.threads, room, lambda width: self.planner.pass_seconds(plan.threads, width)
        )

    def _feed(self, run: _Run, token_ids: Sequence[int], keep: int | None = None) -> torch.Tensor:
        """Run `token_ids` through the model after what the cache holds; return the logits of
        their last `keep` positions (default: all of them) as [positions, vocabulary]."""
        keep = len(token_ids) if keep is None else keep
        options = {"logits_to_keep": keep} if self._keeps_logits else {}
        input_ids = torch.tensor([list(token_ids)], dtype=torch.long)
        output = self._model(
            input_ids=input_ids,
            use_cache=True,
            **{self._cache_argument: run.cache},
            **options,
        )
        run.fed_ids.extend(token_ids)
        kept_logits: torch.Tensor = output.logits[0, -keep:]
        return kept_logits


@dataclass
class _Run:
    """The state of one generation."""

    cache: DynamicCache
    fed_ids: list[int]
    """The tokens whose keys and values `cache` holds."""
    stream: ContinuationStream
    on_text: TextCallback | None
    new_ids: list[int] = field(default_factory=list)
    decode_passes: int = 0

    def forget_last(self, count: int) -> None:
        """Drop the last `count` fed tokens and their keys and values (a rejected draft)."""
        self.cache.crop(-count)
        del self.fed_ids[-count:]

    def emit(self, text: str) -> None:
        if text and self.on_text is not None:
            self.on_text(text)


@contextmanager
def _threads_restored() -> Iterator[None]:
    """Run the block, which may change the torch thread count, then restore the count."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)
