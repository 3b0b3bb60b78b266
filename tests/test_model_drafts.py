"""Tokens drafted by the 4-bit copy of an fp32 model: fp32's text, in fewer fp32 passes."""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from phi3_lsp import engine as engine_module
from phi3_lsp import memory_fit
from phi3_lsp.drafts import TokenLookup
from phi3_lsp.engine import ModelEngine
from phi3_lsp.kv_cache import GrowingCache
from phi3_lsp.model_drafts import MAX_MODEL_DRAFT, PROBE_AFTER_PASSES, DraftPlanner, ModelDrafter
from phi3_lsp.pass_planner import PassPlanner
from phi3_lsp.sources import resolve_model
from phi3_lsp.stoppable_passes import PassStopped
from plain_texts import PlainTexts
from test_drafts import source_windows

pytestmark = pytest.mark.solo

FRENCH_CAPITAL = "The capital of France is"
REPEATING_CODE = "".join(f"    total += price[{i}] * count[{i}]\n" for i in range(4)) + "    total"
NO_INT4_DRAFTS_HERE = "4-bit drafts need our fp32 and 4-bit kernels (AVX-512 BF16 and VBMI)"
"""Why a test of 4-bit drafts is skipped on this CPU."""


def checking_pass(width: int) -> float:
    """A checking pass over `width` tokens: 40 ms, and 3 % more for each token beyond one."""
    return 0.040 * (1 + 0.03 * (width - 1))


class TestDraftPlanner:
    def test_drafts_that_are_kept_and_cheap_grow_long(self) -> None:
        planner = DraftPlanner()
        planner.record_drafting(threads=2, tokens=10, seconds=0.065)  # 6.5 ms each
        for _ in range(30):
            planner.record_draft(drafted=8, kept=8)
        assert planner.length(2, 50, checking_pass) == MAX_MODEL_DRAFT

    def test_kept_drafts_grow_long_before_a_long_checking_pass_was_timed(self) -> None:
        # Only checking passes of up to 5 tokens timed so far, each token ~1 ms more: a long
        # one is not guessed dearer than that, or drafts would stay short until one was timed.
        checking = PassPlanner()
        for width in range(1, 6):
            checking.record_pass(1, width, 0.028 + 0.001 * (width - 1))
        planner = DraftPlanner()
        planner.record_drafting(threads=1, tokens=10, seconds=0.055)
        for _ in range(5):
            planner.record_draft(drafted=4, kept=4)
        assert planner.length(1, 50, lambda width: checking.pass_seconds(1, width)) > 16

    def test_a_draft_never_passes_the_limit(self) -> None:
        planner = DraftPlanner()
        for _ in range(30):
            planner.record_draft(drafted=8, kept=8)
        assert planner.length(2, 3, checking_pass) == 3
        assert planner.length(2, 0, checking_pass) == 0

    def test_tokens_after_a_rejected_one_count_for_nothing(self) -> None:
        # A checking pass keeps drafted tokens up to the first it rejects and never checks the
        # rest: a long draft rejected there says no more of the drafter than a short one.
        short, long = DraftPlanner(), DraftPlanner()
        for planner, drafted in ((short, 9), (long, MAX_MODEL_DRAFT)):
            planner.record_drafting(threads=2, tokens=10, seconds=0.065)
            for _ in range(30):
                planner.record_draft(drafted=drafted, kept=8)
        assert long.length(2, 50, checking_pass) == short.length(2, 50, checking_pass) > 1

    def test_drafts_that_are_rejected_stop(self) -> None:
        planner = DraftPlanner()
        for _ in range(30):
            planner.record_draft(drafted=2, kept=0)
        assert planner.length(2, 50, checking_pass) == 0

    def test_after_drafts_stopped_one_token_is_drafted_now_and_then(self) -> None:
        # So that drafting resumes where the text becomes predictable again.
        planner = DraftPlanner()
        for _ in range(30):
            planner.record_draft(drafted=2, kept=0)
        lengths = [planner.length(2, 50, checking_pass) for _ in range(3 * PROBE_AFTER_PASSES)]
        assert lengths.count(1) == 2 and set(lengths) == {0, 1}
        for _ in range(30):
            planner.record_draft(drafted=1, kept=1)
        assert planner.length(2, 50, checking_pass) > 1

    def test_draft_passes_as_slow_as_checking_ones_are_not_worth_it(self) -> None:
        planner = DraftPlanner()
        planner.record_drafting(threads=1, tokens=1, seconds=0.040)
        for _ in range(30):
            planner.record_draft(drafted=4, kept=3)
        assert planner.length(1, 50, checking_pass) == 0
        # The same drafts on another thread count, whose draft passes are not timed yet, are.
        assert planner.length(2, 50, checking_pass) > 0


@pytest.fixture(scope="module")
def drafting_fp32_engine(smollm2_dir: Path) -> Iterator[ModelEngine]:
    """SmolLM2 in fp32 with its 4-bit drafts, loaded for this module (the session's fp32 engine
    stays without them)."""
    engine = ModelEngine.load(resolve_model("smollm2-135m"))
    if not engine.takes_int4_drafts:
        pytest.skip(NO_INT4_DRAFTS_HERE)
    assert engine.load_drafter()
    yield engine


@pytest.mark.slow
class TestSmolLM2WithDrafts:
    def test_the_text_is_fp32s_in_fewer_passes(
        self,
        drafting_fp32_engine: ModelEngine,
        smollm2_engine: ModelEngine,
        plain_texts: PlainTexts,
    ) -> None:
        assert drafting_fp32_engine.drafts_from_int4
        assert not smollm2_engine.drafts_from_int4
        passes = tokens = 0
        for text in [FRENCH_CAPITAL, *source_windows(5, 600)]:
            prompt = smollm2_engine.tokenizer.encode_prompt(text)
            generation = drafting_fp32_engine.generate(prompt, max_new_tokens=50)
            # fp32, one token a pass
            assert generation.token_ids == plain_texts.token_ids(
                "smollm2_engine", smollm2_engine, prompt, 50
            )
            passes += generation.decode_passes
            tokens += generation.decoded_tokens
        # Code that does not repeat itself, where drafts from the text find little.
        assert passes < 0.5 * tokens

    def test_a_reused_prompt_gives_the_text_of_a_cold_run(
        self, drafting_fp32_engine: ModelEngine
    ) -> None:
        engine = drafting_fp32_engine
        window = source_windows(1, 900)[0]
        engine.generate(engine.tokenizer.encode_prompt(window[:600]), cache_key="file")
        prompt = engine.tokenizer.encode_prompt(window)
        reused = engine.generate(prompt, cache_key="file")
        assert reused.reused_prompt_tokens > 0
        assert reused.token_ids == engine.generate(prompt).token_ids

    def test_a_stop_while_drafting_leaves_the_cache_as_fed(
        self, drafting_fp32_engine: ModelEngine
    ) -> None:
        engine = drafting_fp32_engine
        prompt = engine.tokenizer.encode_prompt(source_windows(2, 600)[1])
        stop, pieces = threading.Event(), list[str]()

        def on_text(text: str) -> None:
            pieces.append(text)
            if len(pieces) == 3:
                stop.set()

        stopped = engine.generate(prompt, stop_event=stop, on_text=on_text, cache_key="stopped")
        assert stopped.finish_reason == "stopped"
        assert "".join(pieces) == stopped.text
        # What the stopped run left in the cache is reused as if a cold run had computed it.
        again = engine.generate(prompt, cache_key="stopped")
        assert again.reused_prompt_tokens == len(prompt) - 1
        assert again.token_ids == engine.generate(prompt).token_ids

    def test_where_the_text_repeats_itself_a_draft_takes_fewer_passes(
        self, drafting_fp32_engine: ModelEngine
    ) -> None:
        # Each draft pass also checks tokens looked up in the text: where the 4-bit model's own
        # choices confirm them, several tokens come from one pass, and the draft is the same.
        passes: list[int] = []
        drafts, pass_counts = [], []
        with torch.inference_mode():
            drafter, prompt, cache = prefilled_drafter(drafting_fp32_engine, REPEATING_CODE)
            counting = drafter._model.register_forward_pre_hook(lambda *_: passes.append(1))
            for text in (None, TokenLookup(prompt)):
                passes.clear()
                drafts.append(
                    drafter.draft(cache, len(prompt) - 1, prompt[-1], 24, lambda: None, text=text)
                )
                pass_counts.append(len(passes))
                assert cache.get_seq_length() == len(prompt) - 1
        counting.remove()
        assert drafts[1] == drafts[0]
        assert pass_counts[1] < pass_counts[0] == 24

    def test_drafting_leaves_the_cache_as_it_found_it(
        self, drafting_fp32_engine: ModelEngine
    ) -> None:
        with torch.inference_mode():
            drafter, prompt, cache = prefilled_drafter(drafting_fp32_engine, FRENCH_CAPITAL)
            draft = drafter.draft(cache, len(prompt) - 1, prompt[-1], 5, lambda: None)
            assert len(draft) == 5
            assert cache.get_seq_length() == len(prompt) - 1

            # The text ends at an end token: nothing is drafted from it on.
            end = next(i for i in range(1, 5) if draft[i] not in draft[:i])
            ended = drafter.draft(
                cache, len(prompt) - 1, prompt[-1], 5, lambda: None, frozenset({draft[end]})
            )
            assert ended == draft[:end]
            assert cache.get_seq_length() == len(prompt) - 1

            passes = itertools.count(1)

            def stop_after_two() -> None:
                if next(passes) > 2:
                    raise PassStopped

            with pytest.raises(PassStopped):
                drafter.draft(cache, len(prompt) - 1, prompt[-1], 5, stop_after_two)
            assert cache.get_seq_length() == len(prompt) - 1


def prefilled_drafter(
    engine: ModelEngine, text: str
) -> tuple[ModelDrafter, list[int], GrowingCache]:
    """The engine's drafter, `text` as prompt tokens and a cache of all of them but the last
    (under `torch.inference_mode`)."""
    drafter = engine._decoder.drafter
    assert drafter is not None
    prompt = engine.tokenizer.encode_prompt(text)
    cache = GrowingCache()
    engine.model(input_ids=torch.tensor([prompt[:-1]]), cache=cache)
    return drafter, prompt, cache


@pytest.mark.slow
class TestWhoDrafts:
    def test_an_int4_model_checks_no_4bit_drafts(self, smollm2_int4_engine: ModelEngine) -> None:
        assert not smollm2_int4_engine.load_drafter()
        assert not smollm2_int4_engine.drafts_from_int4

    def test_no_4bit_drafts_without_our_4bit_kernels(
        self, smollm2_engine_without_avx512: ModelEngine
    ) -> None:
        # Torch's 4-bit passes cost too much to pay for drafts there: drafts from the text.
        engine = smollm2_engine_without_avx512
        assert engine.drafts_until > 0
        assert not engine.takes_int4_drafts
        assert not engine.load_drafter()
        assert not engine.wants_int4_layers()

    def test_no_drafts_when_they_would_not_fit_in_memory(
        self, tiny_phi3_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        engine = ModelEngine.load(resolve_model(str(tiny_phi3_dir)), threads=1)
        monkeypatch.setattr(memory_fit, "available_memory", lambda: 1 << 20)
        assert not engine.load_drafter()
        prompt = engine.tokenizer.encode_prompt(FRENCH_CAPITAL)
        assert len(engine.generate(prompt, max_new_tokens=5).token_ids) > 0

    def test_drafts_files_are_not_read_ahead_when_they_would_not_fit_in_memory(
        self, tiny_phi3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Phi-3-mini's are 2.3 GB: read for nothing, they would push other files out of memory.
        folder = Path(shutil.copytree(tiny_phi3_dir, tmp_path / "checkpoint"))
        ModelEngine.load(resolve_model(str(folder)), threads=1, weights="int4")  # caches them
        engine = ModelEngine.load(resolve_model(str(folder)), threads=1)
        if not engine.takes_int4_drafts:
            pytest.skip(NO_INT4_DRAFTS_HERE)
        assert engine.drafter_files()
        monkeypatch.setattr(memory_fit, "available_memory", lambda: 1 << 20)
        assert engine.drafter_files() == []

    def test_a_large_model_drafts_only_once_its_4bit_layers_are_cached(
        self, tiny_phi3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Quantizing Phi-3-mini takes about half a minute on the thread completions run on.
        monkeypatch.setattr(engine_module, "QUANTIZED_AT_ONCE_PARAMETERS", 0)
        folder = Path(shutil.copytree(tiny_phi3_dir, tmp_path / "checkpoint"))
        engine = ModelEngine.load(resolve_model(str(folder)), threads=1)
        if not engine.takes_int4_drafts:
            pytest.skip(NO_INT4_DRAFTS_HERE)
        assert not engine.load_drafter()
        ModelEngine.load(resolve_model(str(folder)), threads=1, weights="int4")  # caches them
        assert engine.load_drafter()
        assert engine.drafts_from_int4

    def test_loading_drafts_runs_no_pass_of_the_fp32_model(self, tiny_phi3_dir: Path) -> None:
        # On the thread completions run on: Phi-3-mini's fp32 passes would hold one up ~2 s.
        engine = ModelEngine.load(resolve_model(str(tiny_phi3_dir)), threads=1)
        if not engine.takes_int4_drafts:
            pytest.skip(NO_INT4_DRAFTS_HERE)
        fp32_passes = itertools.count()
        engine.model.register_forward_hook(lambda *_: next(fp32_passes))
        assert engine.load_drafter()
        assert next(fp32_passes) == 0
