"""Greedy decoding: correctness against a cache-free reference, limits, stops, prefix KV reuse."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from torch.utils.hooks import RemovableHandle

from model_sources import folder_source, tiny_sliding_window_phi3
from phi3_lsp import generation as generation_module
from phi3_lsp.engine import ModelEngine
from phi3_lsp.generation import PREFILL_CHUNK_TOKENS, Generation, GreedyDecoder
from phi3_lsp.kv_cache import GrowingCache
from phi3_lsp.pass_planner import PassPlanner
from phi3_lsp.prefixes import common_prefix_length
from phi3_lsp.prompt_cache import PromptCache
from phi3_lsp.stop_requests import StopRequest, TokenLimit
from phi3_lsp.stoppable_passes import decoder_layers
from phi3_lsp.tokens import DocumentTokenizer

CAPITAL = "The capital of France is"
T = TypeVar("T")

CODE = "def fibonacci(n):\n    if n < 2:\n        return n\n    return"


@pytest.fixture(scope="module")
def tiny(tiny_phi3_dir: Path) -> ModelEngine:
    return ModelEngine.load(folder_source(tiny_phi3_dir, weights=True, spec="tiny-phi3"))


def greedy_without_cache(engine: ModelEngine, prompt: list[int], steps: int) -> list[int]:
    """The textbook definition: run the whole sequence each step, append the argmax."""
    return greedy_reference(engine.model, prompt, steps)


def long_prompt(engine: ModelEngine, tokens: int) -> list[int]:
    """The first `tokens` tokens of this project's own source, repeated as needed."""
    source = Path(generation_module.__file__).read_text(encoding="utf-8")
    ids = engine.tokenizer.encode_prompt(source)
    repeated: list[int] = ids * (tokens // len(ids) + 1)
    return repeated[:tokens]


def greedy_reference(model: torch.nn.Module, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]


@contextmanager
def per_pass(model: torch.nn.Module, what: Callable[[dict[str, Any]], T]) -> Iterator[list[T]]:
    """Record `what` of each forward pass of `model`, from the pass's keyword arguments."""
    seen: list[T] = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(what(kwargs)), with_kwargs=True
    )
    try:
        yield seen
    finally:
        hook.remove()


def rows_per_pass(model: torch.nn.Module) -> AbstractContextManager[list[int]]:
    """Record how many positions each forward pass of `model` computes."""
    return per_pass(model, lambda kwargs: kwargs["input_ids"].shape[1])


def prompt_marks_per_pass(model: torch.nn.Module) -> AbstractContextManager[list[tuple[int, bool]]]:
    """Record each forward pass of `model`: its positions, and whether its cache was marked as
    reading a prompt."""

    def rows_and_mark(kwargs: dict[str, Any]) -> tuple[int, bool]:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        assert isinstance(cache, GrowingCache)
        return kwargs["input_ids"].shape[1], cache.reading_prompt

    return per_pass(model, rows_and_mark)


@contextmanager
def calls_of(module: torch.nn.Module) -> Iterator[list[None]]:
    """Record each call of `module` (one item per call)."""
    calls: list[None] = []
    hook = module.register_forward_pre_hook(lambda *_: calls.append(None))
    try:
        yield calls
    finally:
        hook.remove()


def stop_on_call(layer: torch.nn.Module, call: int, stop: Callable[[], object]) -> RemovableHandle:
    """Call `stop` right after `layer` has run for the `call`-th time."""
    calls = itertools.count(1)

    def after_layer(*_: object) -> None:  # returns None: the layer's output stays as it is
        if next(calls) == call:
            stop()

    return layer.register_forward_hook(after_layer)


def stopped_in_second_chunk(
    engine: ModelEngine, prompt: list[int], event: threading.Event, stop: Callable[[], object]
) -> tuple[GreedyDecoder, Generation, int]:
    """Generate from `prompt` (over two chunks) with `event` watched, calling `stop` after the
    first decoder layer of the second chunk's pass: the decoder (holding the cache kept for
    "doc"), the generation, and how many passes the second decoder layer ran in."""
    decoder = GreedyDecoder(engine.model, engine.tokenizer, frozenset(), PromptCache())
    first_layer, second_layer = decoder_layers(engine.model)
    hook = stop_on_call(first_layer, 2, stop)
    with calls_of(second_layer) as second_layer_calls:
        stopped = decoder.generate(prompt, max_new_tokens=4, stop_event=event, cache_key="doc")
    hook.remove()
    return decoder, stopped, len(second_layer_calls)


def stop_after(pieces: int, event: threading.Event, seen: list[str]) -> Callable[[str], None]:
    """An `on_text` that sets `event` when the `pieces`-th piece of text arrives."""

    def on_text(text: str) -> None:
        seen.append(text)
        if len(seen) == pieces:
            event.set()

    return on_text


class TestTinyPhi3:
    def test_greedy_tokens_match_a_cache_free_reference(self, tiny: ModelEngine) -> None:
        prompt = tiny.tokenizer.encode_prompt(CAPITAL)
        generation = tiny.generate(prompt, max_new_tokens=12)
        assert generation.finish_reason == "length"
        assert list(generation.token_ids) == greedy_without_cache(tiny, prompt, 12)

    def test_the_text_is_exactly_what_the_tokens_add_to_the_prompt(self, tiny: ModelEngine) -> None:
        # Leading spaces included: SentencePiece pieces like "▁word" start the continuation
        # with a space that decoding the new ids alone would drop.
        tokenizer = tiny.tokenizer
        for text in (CAPITAL, CAPITAL + " ", CODE):
            prompt = tokenizer.encode_prompt(text)
            generation = tiny.generate(prompt, max_new_tokens=10)
            whole = tokenizer.decode([*prompt, *generation.token_ids])
            assert whole == tokenizer.decode(prompt) + generation.text

    @pytest.mark.parametrize("lowered_to", [8, 1], ids=["above-what-is-made", "below-it"])
    def test_a_limit_lowered_while_it_runs_ends_it_there_or_at_once(
        self, tiny: ModelEngine, lowered_to: int
    ) -> None:
        prompt = tiny.tokenizer.encode_prompt(CAPITAL)
        limit = TokenLimit(40)
        made: list[int] = []
        calls = itertools.count(1)

        def before_pass(*_: object) -> None:
            if next(calls) == 3:  # the prompt's pass and one decode pass have run
                made.append(0)
                limit.lower_to(lowered_to)

        hook = tiny.model.register_forward_pre_hook(before_pass)
        try:
            generation = tiny.generate(prompt, max_new_tokens=40, limit=limit)
        finally:
            hook.remove()
        assert made, "the limit was never lowered"
        assert generation.finish_reason == "length"
        tokens = list(generation.token_ids)
        assert tokens == greedy_without_cache(tiny, prompt, len(tokens))
        if lowered_to == 8:
            assert len(tokens) == 8
        else:  # it had made more: they stay, and no pass runs after the one in flight
            assert 1 < len(tokens) < 40

    def test_the_limit_is_respected_and_counted(self, tiny: ModelEngine) -> None:
        prompt = tiny.tokenizer.encode_prompt(CODE)
        generation = tiny.generate(prompt, max_new_tokens=5)
        assert len(generation.token_ids) == 5
        assert generation.decoded_tokens == 4  # the first token comes from the prefill
        assert generation.prefill_seconds > 0 and generation.decode_seconds > 0
        assert generation.decode_tokens_per_second is not None

    def test_no_draft_past_the_end_is_checked_or_counted(self, tiny: ModelEngine) -> None:
        # A draft can run past the end-of-sequence token (the model picks the same tokens after
        # it): the pass that checks it needs none of them, and the speed the status shows counts
        # the answer's tokens only.
        prompt = tiny.tokenizer.encode_prompt(CODE)
        reference = greedy_without_cache(tiny, prompt, 12)
        end = next(i for i in range(2, 12) if reference[i] not in reference[:i])
        decoder = GreedyDecoder(
            tiny.model,
            tiny.tokenizer,
            frozenset({reference[end]}),  # the answer stops before this token
            PromptCache(),
            drafts_until=tiny.context_length,
        )
        drafter = ReferenceDrafter(prompt, reference)
        decoder.drafter = drafter  # type: ignore[assignment]  # drafts the reference, past `end`
        with rows_per_pass(tiny.model) as rows:
            generation = decoder.generate(prompt, max_new_tokens=12)
        assert list(generation.token_ids) == reference[:end]
        assert max(drafter.drafted_until) > len(prompt) + end  # a draft did pass the end
        assert generation.decoded_tokens == end  # all but the prefill's token, and the end
        # ...but no pass computed what follows the end: the answer's tokens before it only.
        assert sum(rows[1:]) == end

    def test_streamed_text_is_the_generated_text(self, tiny: ModelEngine) -> None:
        prompt = tiny.tokenizer.encode_prompt(CAPITAL)
        pieces: list[str] = []
        generation = tiny.generate(prompt, max_new_tokens=20, on_text=pieces.append)
        assert "".join(pieces) == generation.text
        assert all(pieces)

    def test_decode_passes_run_on_the_planned_thread_counts_then_it_is_restored(
        self, tiny: ModelEngine
    ) -> None:
        decoder = GreedyDecoder(tiny.model, tiny.tokenizer, tiny.eos_token_ids, PromptCache())
        prompt = tiny.tokenizer.encode_prompt(CAPITAL)
        reference = decoder.generate(prompt, max_new_tokens=8).token_ids
        before = torch.get_num_threads()
        decoder = GreedyDecoder(
            tiny.model,
            tiny.tokenizer,
            tiny.eos_token_ids,
            PromptCache(),
            pass_planner=PassPlanner((before + 1, before + 2)),
        )
        threads_per_pass: list[int] = []
        hook = tiny.model.register_forward_pre_hook(
            lambda *_: threads_per_pass.append(torch.get_num_threads())
        )
        try:
            generation = decoder.generate(prompt, max_new_tokens=8)
        finally:
            hook.remove()
        # The prompt on all threads (nothing timed yet), then each thread count tried first.
        assert threads_per_pass[0] == before + 2
        assert set(threads_per_pass[1:3]) == {before + 1, before + 2}
        assert torch.get_num_threads() == before
        assert generation.token_ids == reference

    def test_the_engine_has_timed_a_pass_on_each_thread_count_when_it_is_ready(
        self, tiny: ModelEngine
    ) -> None:
        planner = tiny.pass_planner
        assert set(planner.one_token_seconds()) == set(planner.thread_counts)

    def test_a_stop_set_beforehand_computes_nothing(self, tiny: ModelEngine) -> None:
        stop = threading.Event()
        stop.set()
        with rows_per_pass(tiny.model) as rows:
            generation = tiny.generate([1, 450], stop_event=stop)
        assert generation.finish_reason == "stopped"
        assert generation.token_ids == ()
        assert rows == []

    def test_a_long_prompt_runs_in_chunks_and_gives_the_cache_free_text(
        self, tiny: ModelEngine
    ) -> None:
        prompt = long_prompt(tiny, 2 * PREFILL_CHUNK_TOKENS + 176)
        decoder = GreedyDecoder(tiny.model, tiny.tokenizer, frozenset(), PromptCache())
        with rows_per_pass(tiny.model) as rows:
            generation = decoder.generate(prompt, max_new_tokens=4, cache_key="doc")
        assert rows == [PREFILL_CHUNK_TOKENS, PREFILL_CHUNK_TOKENS, 176, 1, 1, 1]
        assert list(generation.token_ids) == greedy_without_cache(tiny, prompt, 4)
        # After an edit, chunks still end where a cold prompt's chunks end.
        edited = [*prompt[:700], *prompt[701:]]
        # 700 tokens unless the next one is the same (the prompt is this project's source).
        kept = common_prefix_length(prompt, edited)
        with rows_per_pass(tiny.model) as rows:
            decoder.generate(edited, max_new_tokens=1, cache_key="doc")
        assert rows == [2 * PREFILL_CHUNK_TOKENS - kept, len(edited) - 2 * PREFILL_CHUNK_TOKENS]

    def test_prompt_passes_are_marked_as_such_and_decode_passes_are_not(
        self, tiny: ModelEngine
    ) -> None:
        # Our kernel may take a prompt's 4-bit products on AMX tiles at any width, never those
        # of a pass that checks drafted tokens (see kv_cache.GrowingCache.reading_prompt).
        prompt = long_prompt(tiny, PREFILL_CHUNK_TOKENS + 40)
        decoder = GreedyDecoder(tiny.model, tiny.tokenizer, frozenset(), PromptCache())
        with prompt_marks_per_pass(tiny.model) as passes:
            decoder.generate(prompt, max_new_tokens=3, cache_key="marks")
            decoder.generate([*prompt, 17], max_new_tokens=3, cache_key="marks")
        assert passes == [
            (PREFILL_CHUNK_TOKENS, True),
            (40, True),
            *[(1, False)] * 2,
            (1, True),  # the typed token after the reused prompt
            *[(1, False)] * 2,
        ]

    def test_a_stop_during_a_prompt_ends_it_within_a_layer_and_keeps_the_finished_chunks(
        self, tiny: ModelEngine
    ) -> None:
        prompt = long_prompt(tiny, 2 * PREFILL_CHUNK_TOKENS + 176)
        stop = threading.Event()
        # Stopped after the first layer of the second chunk: the second layer must not run.
        decoder, stopped, second_layer_passes = stopped_in_second_chunk(
            tiny, prompt, stop, stop.set
        )
        assert stopped.finish_reason == "stopped"
        assert stopped.token_ids == ()
        assert second_layer_passes == 1
        resumed = decoder.generate(prompt, max_new_tokens=4, cache_key="doc")
        assert resumed.reused_prompt_tokens == PREFILL_CHUNK_TOKENS
        assert list(resumed.token_ids) == greedy_without_cache(tiny, prompt, 4)

    def test_a_stop_sparing_the_prompt_finishes_the_chunk_in_flight_and_starts_no_other(
        self, tiny: ModelEngine
    ) -> None:
        prompt = long_prompt(tiny, 2 * PREFILL_CHUNK_TOKENS + 176)
        stop = StopRequest()
        # Stopped in the second chunk by a request that begins with it: that chunk is finished.
        newer_prompt = [*prompt[: 2 * PREFILL_CHUNK_TOKENS + 10], 450]
        decoder, stopped, second_layer_passes = stopped_in_second_chunk(
            tiny, prompt, stop, lambda: stop.stop_keeping(newer_prompt)
        )
        assert stopped.finish_reason == "stopped"
        assert second_layer_passes == 2
        newer = decoder.generate(newer_prompt, max_new_tokens=4, cache_key="doc")
        assert newer.reused_prompt_tokens == 2 * PREFILL_CHUNK_TOKENS
        assert list(newer.token_ids) == greedy_without_cache(tiny, newer_prompt, 4)

    def test_a_stop_for_a_prompt_that_differs_in_the_chunk_ends_it_within_a_layer(
        self, tiny: ModelEngine
    ) -> None:
        prompt = long_prompt(tiny, 2 * PREFILL_CHUNK_TOKENS + 176)
        stop = StopRequest()
        edited = [*prompt[:700], *prompt[701:]]  # an edit inside the second chunk
        decoder, _, second_layer_passes = stopped_in_second_chunk(
            tiny, prompt, stop, lambda: stop.stop_keeping(edited)
        )
        assert second_layer_passes == 1
        after = decoder.generate(edited, max_new_tokens=4, cache_key="doc")
        assert after.reused_prompt_tokens == PREFILL_CHUNK_TOKENS

    def test_reading_a_prompt_is_reported_after_each_layer_of_its_passes(
        self, tiny: ModelEngine
    ) -> None:
        prompt = long_prompt(tiny, 2 * PREFILL_CHUNK_TOKENS + 176)
        decoder = GreedyDecoder(tiny.model, tiny.tokenizer, frozenset(), PromptCache())
        decoder.generate(prompt[:700], max_new_tokens=1, cache_key="doc")
        reads: list[tuple[int, int]] = []
        generation = decoder.generate(
            prompt,
            max_new_tokens=3,
            cache_key="doc",
            on_prompt_read=lambda read, total: reads.append((read, total)),
        )
        assert generation.reused_prompt_tokens == 700
        layers = len(decoder_layers(tiny.model))
        # Two passes (up to the chunk's end at 1,024, then the rest); decode passes report nothing.
        assert len(reads) == 2 * layers
        assert {total for _, total in reads} == {len(prompt) - 700}
        assert reads[layers - 1][0] == 2 * PREFILL_CHUNK_TOKENS - 700
        assert reads[-1][0] == len(prompt) - 700
        assert [read for read, _ in reads] == sorted(read for read, _ in reads)

    def test_a_stop_during_a_decode_pass_ends_it_and_the_next_request_is_exact(
        self, tiny: ModelEngine
    ) -> None:
        prompt = tiny.tokenizer.encode_prompt(CODE)
        prompt_cache = PromptCache()
        decoder = GreedyDecoder(tiny.model, tiny.tokenizer, frozenset(), prompt_cache)
        first_layer, second_layer = decoder_layers(tiny.model)
        stop = threading.Event()
        hook = stop_on_call(first_layer, 1 + 3, stop.set)  # in the third decode pass
        with calls_of(second_layer) as second_layer_calls:
            stopped = decoder.generate(prompt, max_new_tokens=10, stop_event=stop, cache_key="doc")
        hook.remove()
        assert stopped.finish_reason == "stopped"
        assert len(stopped.token_ids) == 3  # from the prompt's pass and two decode passes
        assert len(second_layer_calls) == 1 + 2
        accepted = [*prompt, *stopped.token_ids]
        # What the stopped pass's first layer wrote is gone: each layer holds the fed tokens.
        kept, reused = prompt_cache.take("doc", accepted)
        assert kept is not None and reused == len(accepted) - 1
        assert [kept.get_seq_length(layer) for layer in range(2)] == [reused, reused]
        prompt_cache.put("doc", accepted[:reused], kept)
        after = decoder.generate(accepted, max_new_tokens=4, cache_key="doc")
        assert after.reused_prompt_tokens == len(accepted) - 1
        assert list(after.token_ids) == greedy_without_cache(tiny, accepted, 4)

    def test_a_stopped_request_keeps_the_cache_for_the_next(self, tiny: ModelEngine) -> None:
        prompt = tiny.tokenizer.encode_prompt(CODE)
        tiny.generate(prompt, max_new_tokens=3, cache_key="stopped")
        stop = threading.Event()
        stop.set()
        stopped = tiny.generate([*prompt, 450], stop_event=stop, cache_key="stopped")
        assert (stopped.token_ids, stopped.decode_passes) == ((), 0)
        after = tiny.generate([*prompt, 450], max_new_tokens=3, cache_key="stopped")
        assert after.reused_prompt_tokens == len(prompt)

    def test_a_stop_during_generation_returns_at_once(self, tiny: ModelEngine) -> None:
        stop, seen = threading.Event(), list[str]()
        on_text = stop_after(3, stop, seen)
        generation = tiny.generate(
            tiny.tokenizer.encode_prompt(CAPITAL), stop_event=stop, on_text=on_text
        )
        assert generation.finish_reason == "stopped"
        assert "".join(seen) == generation.text

    def test_an_end_token_stops_without_appearing(self, tiny: ModelEngine) -> None:
        prompt = tiny.tokenizer.encode_prompt(CAPITAL)
        first, second, *_ = greedy_without_cache(tiny, prompt, 2)
        decoder = GreedyDecoder(tiny.model, tiny.tokenizer, frozenset({second}), PromptCache())
        generation = decoder.generate(prompt, max_new_tokens=10)
        assert generation.finish_reason == "eos"
        assert generation.token_ids == (first,)

    def test_a_reused_prefix_gives_the_cold_text(self, tiny: ModelEngine) -> None:
        first = tiny.tokenizer.encode_prompt(CODE)
        tiny.generate(first, max_new_tokens=10, cache_key="doc")
        extended = tiny.tokenizer.encode_prompt(CODE + " fib")
        warm = tiny.generate(extended, max_new_tokens=10, cache_key="doc")
        cold = tiny.generate(extended, max_new_tokens=10)
        assert warm.reused_prompt_tokens > 0
        assert cold.reused_prompt_tokens == 0
        assert warm.token_ids == cold.token_ids


class TestReadingAhead:
    def test_a_prompt_read_ahead_leaves_only_its_last_token_to_the_completion(
        self, tiny: ModelEngine
    ) -> None:
        prompt = long_prompt(tiny, PREFILL_CHUNK_TOKENS + 100)
        decoder = GreedyDecoder(tiny.model, tiny.tokenizer, frozenset(), PromptCache())
        with rows_per_pass(tiny.model) as rows:
            read = decoder.read(prompt, cache_key="doc")
        assert (read.prompt_tokens, read.cached_tokens, read.read_tokens) == (
            len(prompt),
            len(prompt) - 1,
            len(prompt) - 1,
        )
        assert rows == [PREFILL_CHUNK_TOKENS, 99]  # chunks end where a completion's would
        with rows_per_pass(tiny.model) as rows:
            generation = decoder.generate(prompt, max_new_tokens=4, cache_key="doc")
        assert generation.reused_prompt_tokens == len(prompt) - 1
        assert rows == [1, 1, 1, 1]
        assert list(generation.token_ids) == greedy_without_cache(tiny, prompt, 4)

    def test_a_typed_character_after_reading_ahead_gives_the_cold_text(
        self, tiny: ModelEngine
    ) -> None:
        decoder = GreedyDecoder(tiny.model, tiny.tokenizer, frozenset(), PromptCache())
        decoder.read(tiny.tokenizer.encode_prompt(CODE), cache_key="doc")
        typed = tiny.tokenizer.encode_prompt(CODE + " f")
        generation = decoder.generate(typed, max_new_tokens=6, cache_key="doc")
        assert generation.reused_prompt_tokens > 0
        assert list(generation.token_ids) == greedy_without_cache(tiny, typed, 6)

    def test_reading_what_the_cache_holds_runs_nothing_and_keeps_the_continuation(
        self, tiny: ModelEngine
    ) -> None:
        prompt = tiny.tokenizer.encode_prompt(CODE)
        decoder = GreedyDecoder(tiny.model, tiny.tokenizer, frozenset(), PromptCache())
        first = decoder.generate(prompt, max_new_tokens=6, cache_key="doc")
        with rows_per_pass(tiny.model) as rows:
            read = decoder.read(prompt, cache_key="doc")
        assert rows == []
        assert (read.cached_tokens, read.read_tokens) == (len(prompt) - 1, 0)
        # Accepting the suggestion: the prompt and the continuation are still cached.
        accepted = [*prompt, *first.token_ids]
        after = decoder.generate(accepted, max_new_tokens=1, cache_key="doc")
        assert after.reused_prompt_tokens == len(accepted) - 1

    def test_a_stopped_read_keeps_its_finished_chunks(self, tiny: ModelEngine) -> None:
        prompt = long_prompt(tiny, 2 * PREFILL_CHUNK_TOKENS + 176)
        decoder = GreedyDecoder(tiny.model, tiny.tokenizer, frozenset(), PromptCache())
        stop = threading.Event()
        first_layer = decoder_layers(tiny.model)[0]
        hook = stop_on_call(first_layer, 2, stop.set)  # in the second chunk
        read = decoder.read(prompt, cache_key="doc", stop_event=stop)
        hook.remove()
        assert read.cached_tokens == PREFILL_CHUNK_TOKENS
        resumed = decoder.generate(prompt, max_new_tokens=4, cache_key="doc")
        assert resumed.reused_prompt_tokens == PREFILL_CHUNK_TOKENS
        assert list(resumed.token_ids) == greedy_without_cache(tiny, prompt, 4)


def test_a_sliding_window_model_reuses_prefixes_beyond_its_window(phi3_mini_dir: Path) -> None:
    model = tiny_sliding_window_phi3(8)
    tokenizer = DocumentTokenizer.from_dir(phi3_mini_dir)
    decoder = GreedyDecoder(model, tokenizer, frozenset(), PromptCache())
    first, edited = tokenizer.encode_prompt(CODE), tokenizer.encode_prompt(CODE[:-2] + "x fib(n)")
    assert len(first) > 2 * 8
    decoder.generate(first, max_new_tokens=6, cache_key="doc")
    warm = decoder.generate(edited, max_new_tokens=6, cache_key="doc")
    assert warm.reused_prompt_tokens > 8
    assert list(warm.token_ids) == greedy_reference(model, edited, 6)


@pytest.mark.slow
class TestSmolLM2:
    def test_the_capital_of_france_is_paris(self, smollm2_engine: ModelEngine) -> None:
        prompt = smollm2_engine.tokenizer.encode_prompt(CAPITAL)
        generation = smollm2_engine.generate(prompt)
        assert generation.text.startswith(" Paris")
        assert CAPITAL not in generation.text
        assert len(generation.token_ids) <= 50

    def test_never_more_than_fifty_new_tokens(self, smollm2_engine: ModelEngine) -> None:
        prompt = smollm2_engine.tokenizer.encode_prompt(CODE)
        generation = smollm2_engine.generate(prompt)
        assert len(generation.token_ids) <= 50
        assert generation.finish_reason in {"length", "eos"}
        assert not generation.text.startswith(CODE)

    def test_a_stop_after_three_pieces_returns_at_once(self, smollm2_engine: ModelEngine) -> None:
        stop, seen = threading.Event(), list[str]()
        prompt = smollm2_engine.tokenizer.encode_prompt(CODE)
        generation = smollm2_engine.generate(
            prompt, stop_event=stop, on_text=stop_after(3, stop, seen)
        )
        assert generation.finish_reason == "stopped"
        assert len(seen) == 3
        # Each piece here is one token: no token is generated after the stop.
        assert len(generation.token_ids) <= 3 + 1
        assert generation.text == "".join(seen)

    def test_one_line_stops_at_the_first_line_break(self, smollm2_engine: ModelEngine) -> None:
        prompt = smollm2_engine.tokenizer.encode_prompt("def add(a, b):\n    return max(")
        whole = smollm2_engine.generate(prompt)
        line = smollm2_engine.generate(prompt, one_line=True)
        assert line.finish_reason == "line"
        # The same text up to and including the token that holds the line break.
        assert whole.token_ids[: len(line.token_ids)] == line.token_ids
        assert "\n" in line.text and "\n" not in smollm2_engine.tokenizer.decode(
            line.token_ids[:-1]
        )
        assert len(line.token_ids) < len(whole.token_ids)

    def test_one_line_stops_at_a_lone_carriage_return_too(
        self, smollm2_engine: ModelEngine
    ) -> None:
        # A document with classic Mac line breaks: LSP counts "\r" alone as one.
        document = "def add(a, b):\r    return a + b\r\rdef mul(a, b):"
        prompt = smollm2_engine.tokenizer.encode_prompt(document)
        whole = smollm2_engine.generate(prompt)
        line = smollm2_engine.generate(prompt, one_line=True)
        assert whole.text.startswith("\r    return")  # a lone "\r" first
        assert line.finish_reason == "line" and "\n" not in line.text
        assert whole.token_ids[: len(line.token_ids)] == line.token_ids
        assert len(line.token_ids) < len(whole.token_ids)

    @pytest.mark.parametrize(
        ("before", "after"),
        [
            (CODE, CODE + " fib"),  # typed a few characters
            (CODE, CODE[:-3] + "yield"),  # edited near the end
            (CAPITAL, CAPITAL + " Paris. The capital of Italy is"),  # accepted and typed on
        ],
    )
    def test_reusing_a_prefix_gives_exactly_the_cold_text(
        self, smollm2_engine: ModelEngine, before: str, after: str
    ) -> None:
        tokenizer = smollm2_engine.tokenizer
        key = f"file:///reuse/{before!r}"
        # 20 tokens: long enough for any numerical drift to change the text, cheap on 2 cores.
        smollm2_engine.generate(tokenizer.encode_prompt(before), max_new_tokens=20, cache_key=key)
        warm = smollm2_engine.generate(
            tokenizer.encode_prompt(after), max_new_tokens=20, cache_key=key
        )
        cold = smollm2_engine.generate(tokenizer.encode_prompt(after), max_new_tokens=20)
        assert warm.reused_prompt_tokens > 0
        assert warm.text == cold.text
        smollm2_engine.forget_prompt(key)


class ReferenceDrafter:
    """Drafts the continuation given, as many tokens as asked: what a drafter that always
    guesses right would draft."""

    def __init__(self, prompt: list[int], continuation: list[int]) -> None:
        self._tokens = [*prompt, *continuation]
        self.drafted_until: list[int] = []
        self.planner = self

    def length(self, threads: int, limit: int, checking_pass: Callable[[int], float]) -> int:
        return limit

    def record_draft(self, drafted: int, kept: int) -> None:
        pass

    def draft(
        self,
        cache: object,
        position: int,
        last: int,
        length: int,
        check: Callable[[], None],
        ends: frozenset[int],
        text: object,
    ) -> list[int]:
        # `position` tokens are in the cache; `last` comes next, then the draft.
        self.drafted_until.append(position + 1 + length)
        return self._tokens[position + 1 : position + 1 + length]
