"""Drafted tokens: found in the text so far, checked in one pass, never changing the greedy text."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import Phi3Config

from model_sources import folder_source, tiny_sliding_window_phi3
from phi3_lsp.cpu_kernels import own_fp32_kernel, own_kernels
from phi3_lsp.drafts import LOOKUP_WINDOW, TokenLookup
from phi3_lsp.engine import ModelEngine
from phi3_lsp.generation import CHECKED_ROWS_AT_MOST, Generation, GreedyDecoder
from phi3_lsp.kv_cache import GrowingCache
from phi3_lsp.pass_planner import MAX_DRAFT, PassPlan, PassPlanner
from phi3_lsp.prompt_cache import PromptCache
from phi3_lsp.quantize import quantize_to_int4
from phi3_lsp.row_attention import attend_row_by_row, exact_rows_until
from phi3_lsp.tokens import DocumentTokenizer
from plain_texts import PlainTexts

pytestmark = pytest.mark.solo

# Code that repeats itself, as code does: what follows a repeated name is in the text already.
REPETITIVE = (
    "def area_of_square(side):\n    return side * side\n\n\n"
    "def area_of_rectangle(width, height):\n    return width * height\n\n\n"
    "def area_of_"
)


class TestTokenLookup:
    def test_what_followed_the_longest_repeated_ending_is_drafted(self) -> None:
        # The text ends with [1, 2, 3]: as a 3-gram it last occurred at the start, followed by
        # [4, 5]; its shorter ending [2, 3] occurred later, followed by 8.
        lookup = TokenLookup([1, 2, 3, 4, 5, 9, 2, 3, 8, 1, 2, 3])
        assert lookup.draft(2) == [4, 5]

    def test_the_latest_occurrence_is_drafted(self) -> None:
        lookup = TokenLookup([7, 8, 1, 7, 8, 2, 7, 8])
        assert lookup.draft(1) == [2]

    def test_text_that_does_not_repeat_its_ending_gets_no_draft(self) -> None:
        assert TokenLookup([1, 2, 3, 4, 5]).draft(3) == []
        # A single repeated token is too little to go on.
        assert TokenLookup([1, 2, 3, 4, 3]).draft(3) == []

    def test_tokens_added_later_are_found(self) -> None:
        lookup = TokenLookup([5, 6, 7])
        assert lookup.draft(2) == []
        lookup.extend([1, 5, 6])
        assert lookup.draft(2) == [7, 1]

    def test_tokens_not_yet_checked_end_the_looked_up_ngram_but_stay_out_of_the_text(
        self,
    ) -> None:
        lookup = TokenLookup([1, 2, 3, 4, 9, 1])
        assert lookup.draft(2) == []  # [9, 1] never occurred before
        assert lookup.draft(2, after=[2]) == [3, 4]  # [1, 2] did
        assert lookup.draft(2) == []

    def test_a_draft_is_cut_at_the_end_of_the_text(self) -> None:
        assert TokenLookup([1, 2, 3, 1, 2]).draft(5) == [3, 1, 2]
        assert TokenLookup([1, 2, 3, 1, 2]).draft(0) == []

    def test_only_the_most_recent_tokens_are_searched(self) -> None:
        old_match = [1, 2, 3] + [10 + n % 50_000 for n in range(LOOKUP_WINDOW)]
        assert TokenLookup([*old_match, 1, 2]).draft(1) == []


class AlwaysDraft(PassPlanner):
    """Drafts as many tokens as it may: every pass checks as many drafted tokens as it can."""

    def plan(self, draft_limit: int) -> PassPlan:
        return PassPlan(self.thread_counts[-1], max(0, min(MAX_DRAFT, draft_limit)))


class AlternatingThreads(PassPlanner):
    """Drafts as many tokens as it may, each pass on another thread count (1, 2, 1, ...)."""

    def __init__(self) -> None:
        super().__init__((1, 2))
        self._passes_planned = 0

    def plan(self, draft_limit: int) -> PassPlan:
        self._passes_planned += 1
        return PassPlan(1 + self._passes_planned % 2, max(0, min(MAX_DRAFT, draft_limit)))


class FixedCosts(PassPlanner):
    """Plans with set pass costs on one thread (a pass over k tokens: 1 + 0.3 (k - 1) one-token
    passes), not the measured ones, so its choices depend on the kept share alone."""

    def __init__(self) -> None:
        super().__init__((1,))
        for width in range(1, MAX_DRAFT + 2):
            super().record_pass(1, width, 0.020 * (1 + 0.3 * (width - 1)))

    def record_pass(self, threads: int, width: int, seconds: float) -> None:
        pass


def drafting_decoder(engine: ModelEngine, planner: PassPlanner | None = None) -> GreedyDecoder:
    """A decoder of the same model that drafts as `planner` plans (default: the longest drafts
    it can find)."""
    return GreedyDecoder(
        engine.model,
        engine.tokenizer,
        engine.eos_token_ids,
        PromptCache(),
        drafts_until=engine.drafts_until,
        pass_planner=planner or AlwaysDraft(),
    )


def source_windows(count: int, characters: int) -> list[str]:
    """Windows of real code, each starting at a different definition."""
    source = Path(textwrap.__file__).read_text(encoding="utf-8")
    starts = [index for index in range(len(source)) if source.startswith("\n    def ", index)]
    return [source[start + 1 : start + 1 + characters] for start in starts[:count]]


@pytest.fixture(
    params=["smollm2_int4_engine", "smollm2_engine", "smollm2_engine_without_avx512"],
    ids=["int4", "fp32", "fp32 without AVX-512"],
)
def drafting_engine(request: pytest.FixtureRequest) -> ModelEngine:
    """SmolLM2 in either weight format: both check drafts, fp32 where our kernel runs its
    short passes (see `fp32_products`), in AVX-512 or AVX2."""
    if request.param != "smollm2_int4_engine" and own_fp32_kernel() is None:
        pytest.skip("torch's fp32 products round a row differently beside other rows")
    engine: ModelEngine = request.getfixturevalue(request.param)
    return engine


PlainText = Callable[[list[int], int], tuple[int, ...]]
"""The first tokens of the drafting engine's plain greedy text of a prompt."""


@pytest.fixture
def plain_text(
    request: pytest.FixtureRequest, drafting_engine: ModelEngine, plain_texts: PlainTexts
) -> PlainText:
    """`drafting_engine`'s plain greedy texts, shared by the tests of the session."""
    name = request.node.callspec.params["drafting_engine"]
    return functools.partial(plain_texts.token_ids, name, drafting_engine)


@pytest.mark.slow
class TestSmolLM2ChecksDrafts:
    def test_the_engine_checks_drafts_up_to_its_context_length(
        self, drafting_engine: ModelEngine
    ) -> None:
        assert drafting_engine.drafts_until == drafting_engine.context_length

    def test_a_pass_over_several_tokens_picks_what_one_token_passes_pick(
        self, drafting_engine: ModelEngine
    ) -> None:
        model = drafting_engine.model
        tokens = drafting_engine.tokenizer.encode_prompt(source_windows(1, 1500)[0])
        prompt, fed = tokens[:-5], tokens[-5:]
        with torch.inference_mode():
            cache = GrowingCache()
            model(input_ids=torch.tensor([prompt]), cache=cache, logits_to_keep=1)
            one_by_one = [
                model(input_ids=torch.tensor([[token]]), cache=cache).logits[0, -1] for token in fed
            ]
            cache = GrowingCache()
            model(input_ids=torch.tensor([prompt]), cache=cache, logits_to_keep=1)
            together = model(input_ids=torch.tensor([fed]), cache=cache).logits[0]
        for alone, beside_others in zip(one_by_one, together, strict=True):
            best = int(alone.argmax())
            # The same choice with the same score, to the last bit: no near-tie can flip.
            assert int(beside_others.argmax()) == best
            assert torch.equal(beside_others[best], alone[best])

    def test_drafts_change_no_text_and_save_passes(
        self, drafting_engine: ModelEngine, plain_text: PlainText
    ) -> None:
        drafting = drafting_decoder(drafting_engine)
        drafted: list[Generation] = []
        for text in [REPETITIVE, *source_windows(6, 600)]:
            prompt = drafting_engine.tokenizer.encode_prompt(text)
            generation = drafting.generate(prompt, max_new_tokens=50)
            assert generation.token_ids == plain_text(prompt, 50)
            drafted.append(generation)
        passes = sum(generation.decode_passes for generation in drafted)
        assert passes < 0.8 * sum(generation.decoded_tokens for generation in drafted)

    def test_passes_on_changing_thread_counts_change_no_text(
        self, drafting_engine: ModelEngine, plain_text: PlainText
    ) -> None:
        # The planner moves decode passes between thread counts as the machine's load changes;
        # int4's and our fp32 kernel's give the same bits on any count, so the text may not
        # change with the load.
        engine = drafting_engine
        alternating = drafting_decoder(engine, AlternatingThreads())
        for text in [REPETITIVE, *source_windows(4, 1500)]:
            prompt = engine.tokenizer.encode_prompt(text)
            generation = alternating.generate(prompt, max_new_tokens=30)
            assert generation.token_ids == plain_text(prompt, 30)


@pytest.mark.slow
class TestSmolLM2InInt4:
    def test_a_prompt_read_in_one_pass_leaves_what_one_token_passes_leave(
        self, smollm2_int4_engine: ModelEngine
    ) -> None:
        # So a prompt read cold and one read after a reused prefix, whatever the split, give
        # the same next token with the same score, to the last bit. Where AMX tiles take the
        # products of longer passes (see int4_tiles.c), passes as short as those that check
        # drafted tokens still do.
        kernels = own_kernels()
        if kernels is None:
            pytest.skip("only our attention kernel gives a prompt's rows one-token passes' bits")
        model = smollm2_int4_engine.model
        tokens = smollm2_int4_engine.tokenizer.encode_prompt(source_windows(1, 1500)[0])
        rows = 60 if kernels.tiles_from_rows is None else CHECKED_ROWS_AT_MOST
        cached, read = tokens[:100], tokens[100 : 100 + rows]
        with torch.inference_mode():
            cache = GrowingCache()
            model(input_ids=torch.tensor([cached]), cache=cache, logits_to_keep=1)
            one_by_one = [
                model(input_ids=torch.tensor([[token]]), cache=cache, output_hidden_states=True)
                for token in read
            ]
            cache = GrowingCache()
            model(input_ids=torch.tensor([cached]), cache=cache, logits_to_keep=1)
            together = model(input_ids=torch.tensor([read]), cache=cache, output_hidden_states=True)
        for row, alone in enumerate(one_by_one):
            assert torch.equal(together.hidden_states[-1][0, row], alone.hidden_states[-1][0, 0])

    def test_drafting_resumes_when_the_text_starts_repeating(
        self, smollm2_int4_engine: ModelEngine
    ) -> None:
        engine, planner = smollm2_int4_engine, FixedCosts()
        # Text that did not repeat itself has ruled drafts out...
        for _ in range(10):
            planner.record_draft(drafted=1, kept=0)
        assert planner.plan(MAX_DRAFT).draft_length == 0
        generation = drafting_decoder(engine, planner).generate(
            engine.tokenizer.encode_prompt(REPETITIVE), max_new_tokens=50
        )
        # ...but one-token passes show that drafts of this text would be kept: drafting resumes
        # (the planner's costs are fixed, so this run is the same every time).
        assert generation.decode_passes < generation.decoded_tokens

    def test_the_token_limit_holds_when_drafts_are_kept(
        self, smollm2_int4_engine: ModelEngine, plain_texts: PlainTexts
    ) -> None:
        prompt = smollm2_int4_engine.tokenizer.encode_prompt(REPETITIVE)
        engine = smollm2_int4_engine
        drafting = drafting_decoder(engine)
        for limit in (2, 7, 13):
            generation = drafting.generate(prompt, max_new_tokens=limit)
            reference = plain_texts.token_ids("smollm2_int4_engine", engine, prompt, 50)
            assert generation.token_ids == reference[:limit]

    def test_a_stop_ends_a_drafting_run_with_the_text_streamed_so_far(
        self, smollm2_int4_engine: ModelEngine
    ) -> None:
        prompt = smollm2_int4_engine.tokenizer.encode_prompt(REPETITIVE)
        stop, pieces = threading.Event(), list[str]()

        def on_text(text: str) -> None:
            pieces.append(text)
            if len(pieces) == 4:
                stop.set()

        generation = drafting_decoder(smollm2_int4_engine).generate(
            prompt, max_new_tokens=50, stop_event=stop, on_text=on_text
        )
        assert generation.finish_reason == "stopped"
        assert "".join(pieces) == generation.text
        assert len(generation.token_ids) < 4 + 1 + MAX_DRAFT


WITHOUT_OUR_KERNELS = """
import sys
from phi3_lsp.engine import ModelEngine
from phi3_lsp.sources import resolve_model
engine = ModelEngine.load(resolve_model(sys.argv[1]))
generation = engine.generate(engine.tokenizer.encode_prompt(sys.argv[2]), max_new_tokens=20)
print(engine.drafts_until, generation.decode_passes == generation.decoded_tokens)
"""


@pytest.mark.slow
def test_fp32_weights_without_our_kernel_feed_one_token_per_pass(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    # torch's fp32 products round a row differently beside other rows: drafts could change text.
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_OUR_KERNELS, str(smollm2_dir), REPETITIVE],
        capture_output=True,
        text=True,
        env={**os.environ, "CC": "no-such-cc", "PHI3_LSP_CACHE": str(tmp_path)},
        check=True,
    )
    assert result.stdout.split() == ["0", "True"]


@pytest.mark.slow
def test_fp32_prompts_stay_on_all_threads(smollm2_engine: ModelEngine) -> None:
    # torch's products of a prompt's many rows round differently on 1 and 2 threads: moving
    # them between thread counts would make the greedy text depend on the machine's load.
    planner = as_when_a_core_is_busy(smollm2_engine.pass_planner)
    # All the threads it plans for (torch's count is whatever the last pass of any test set).
    assert planner.prompt_threads() == max(planner.thread_counts) > 1


def as_when_a_core_is_busy(planner: PassPlanner) -> PassPlanner:
    """A copy of `planner` that has timed fewer threads much faster, as when a core is busy."""
    busy = copy.deepcopy(planner)
    for _ in range(50):  # older timings (of this machine as it is) count for nothing then
        for threads in busy.thread_counts:
            busy.record_pass(threads, 1, 0.01 * threads)
    assert busy.prompt_threads(bits_as_decode_pass=True) == 1
    return busy


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["short", "after a keystroke", "long"])
def test_fp32_prompt_passes_of_a_few_tokens_run_where_decode_passes_do(
    smollm2_engine: ModelEngine, prompt: str
) -> None:
    # While another process keeps a core busy, decode passes move to 1 thread; a prompt pass of
    # as few tokens as a decode pass feeds goes with them (its bits do not depend on the thread
    # count either), a long prompt's stays on all threads. The text is the same either way.
    threads = torch.get_num_threads()
    if threads < 2:
        pytest.skip("one torch thread: there are no fewer to move to")
    # REPETITIVE is 40 tokens: more than a decode pass feeds (32), its last line fewer.
    text = REPETITIVE.split("\n")[-1] if prompt == "short" else REPETITIVE
    ids = smollm2_engine.tokenizer.encode_prompt(text)
    reference = smollm2_engine.generate(ids, max_new_tokens=12)
    key = f"threads-{prompt}"
    if prompt == "after a keystroke":  # all but its last tokens read before, as for a request
        smollm2_engine.generate(ids[:-2], max_new_tokens=1, cache_key=key)
    try:
        generation, prompt_pass_threads = generated_while_a_core_is_busy(smollm2_engine, ids, key)
    finally:
        smollm2_engine.forget_prompt(key)
    assert prompt_pass_threads == (threads if prompt == "long" else 1)
    assert generation.text == reference.text


def generated_while_a_core_is_busy(
    engine: ModelEngine, ids: list[int], cache_key: str | None
) -> tuple[Generation, int]:
    """12 tokens after `ids`, planned as when a core is busy, and the torch thread count of the
    generation's first pass, which reads the prompt."""
    decoder = engine._decoder
    planner = decoder.planner
    prompt_pass_threads: list[int] = []

    def note_threads(module: object, args: object) -> None:
        if not prompt_pass_threads:
            prompt_pass_threads.append(torch.get_num_threads())

    hook = engine.model.register_forward_pre_hook(note_threads)
    decoder.planner = as_when_a_core_is_busy(planner)
    try:
        generation = engine.generate(ids, max_new_tokens=12, cache_key=cache_key)
    finally:
        decoder.planner = planner
        hook.remove()
    return generation, prompt_pass_threads[0]


@pytest.mark.slow
def test_fp32_prompt_passes_of_layers_transformers_runs_stay_on_all_threads(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    # Layers with biases are transformers' to run, with its element-wise functions, which split
    # a tensor among the threads where the values at each share's end take another path: even a
    # short prompt's bits then depend on the thread count.
    from transformers import LlamaConfig, LlamaForCausalLM

    if torch.get_num_threads() < 2:
        pytest.skip("one torch thread: there are no fewer to move to")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        attention_bias=True,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(smollm2_dir / name, tmp_path / name)
    engine = ModelEngine.load(folder_source(tmp_path, weights=True))
    assert engine.drafts_until > 0  # it checks drafts: its linear layers are our kernel's
    ids = engine.tokenizer.encode_prompt(REPETITIVE.split("\n")[-1])
    _, prompt_pass_threads = generated_while_a_core_is_busy(engine, ids, None)
    assert prompt_pass_threads == torch.get_num_threads()


def test_drafts_stop_where_a_sliding_window_starts_to_mask(phi3_mini_dir: Path) -> None:
    window = 40
    model = tiny_sliding_window_phi3(window, tied_embeddings=True)
    # Tied embeddings and quiet layers: a token scores highest after itself, so the text
    # repeats and drafts get kept, while attention still adds its part to every score.
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(0.1)
            layer.mlp.down_proj.weight.mul_(0.1)
    quantize_to_int4(model)
    assert attend_row_by_row(model)
    tokenizer = DocumentTokenizer.from_dir(phi3_mini_dir)
    drafting = GreedyDecoder(
        model,
        tokenizer,
        frozenset(),
        PromptCache(),
        drafts_until=exact_rows_until(model.config, 4096),
        pass_planner=AlwaysDraft(),
    )
    plain = GreedyDecoder(model, tokenizer, frozenset(), PromptCache())
    prompt = tokenizer.encode_prompt(REPETITIVE)[: window // 2]
    passes: list[tuple[int, int]] = []  # (tokens in context after the pass, tokens fed)
    model.register_forward_pre_hook(
        lambda _, args, kwargs: passes.append(
            (kwargs["input_ids"].shape[1] + _cached_tokens(kwargs), kwargs["input_ids"].shape[1])
        ),
        with_kwargs=True,
    )
    drafted = drafting.generate(prompt, max_new_tokens=2 * window)
    assert drafted.token_ids == plain.generate(prompt, max_new_tokens=2 * window).token_ids
    decode_passes = passes[1:]  # after the prefill
    assert any(fed > 1 for _, fed in decode_passes)
    assert all(context <= window for context, fed in decode_passes if fed > 1)


def _cached_tokens(forward_arguments: dict[str, Any]) -> int:
    cache = forward_arguments.get("cache", forward_arguments.get("past_key_values"))
    return 0 if cache is None else int(cache.get_seq_length())


def test_drafts_are_exact_up_to_the_sliding_window_or_the_context() -> None:
    assert exact_rows_until(Phi3Config(sliding_window=2047), 4096) == 2047
    assert exact_rows_until(Phi3Config(sliding_window=None), 4096) == 4096
