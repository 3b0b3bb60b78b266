"""The model engine: one tokenizer, one causal LM on the CPU, greedy generation and its report.

`ModelEngine.load` turns a resolved `ModelSource` into a ready engine. Without weights the model
is built on the meta device (no memory): the tokenizer and the architecture report still work,
and `generate` explains how to get weights. Weights that would not fit in the memory left are
not loaded either (see `memory_fit`).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.utils import logging as transformers_logging

from phi3_lsp.architecture import ArchitectureReport, count_parameters, describe_model
from phi3_lsp.cpu_kernels import own_fp32_kernel, own_kernels
from phi3_lsp.errors import ModelSourceError
from phi3_lsp.fp32_products import (
    hold_as_blocks,
    keep_bf16_weights,
    read_at_memory_speed,
    reads_rows_alike,
    stored_in_bf16,
)
from phi3_lsp.generation import Generation, GreedyDecoder, PromptRead, TextCallback
from phi3_lsp.int4_cache import TENSORS_FILE, int4_entry, load_int4
from phi3_lsp.layer_kernel import every_layer_in_one_call, run_layers_in_one_call
from phi3_lsp.layer_stack import run_stack_in_one_go
from phi3_lsp.lean_layers import lean_decoding
from phi3_lsp.load_stops import StopCheck
from phi3_lsp.memory_fit import (
    checkpoint_bytes,
    drafter_fits,
    kv_bytes_per_token,
    memory_is_short,
    memory_shortfall,
    quantizing_fits,
    room_for_a_completion,
    weights_bytes,
)
from phi3_lsp.memory_release import keep_freed_memory_for_reuse
from phi3_lsp.model_config import read_config
from phi3_lsp.model_drafts import ModelDrafter
from phi3_lsp.other_servers import other_phi3_processes
from phi3_lsp.pass_planner import PassPlanner
from phi3_lsp.paths import is_built
from phi3_lsp.progress import ProgressCallback, ProgressUpdate, ignore_progress
from phi3_lsp.prompt_cache import PromptCache
from phi3_lsp.prompt_progress import PromptReadCallback
from phi3_lsp.quantize import input_embedding
from phi3_lsp.row_attention import attend_row_by_row, exact_rows_until
from phi3_lsp.scheduling import torch_thread_count
from phi3_lsp.settings import WeightFormat
from phi3_lsp.shared_products import share_products
from phi3_lsp.sources import SPEC_HELP, ModelSource
from phi3_lsp.stop_requests import TokenLimit
from phi3_lsp.system_memory import available_memory
from phi3_lsp.tokens import DocumentTokenizer
from phi3_lsp.weight_files import check_weight_files
from phi3_lsp.weight_reads import WeightReads, time_weight_reads

log = logging.getLogger(__name__)

# Memory for the keys and values of recent prompts (Phi-3-mini in fp32 needs ~0.8 MB per token).
PROMPT_CACHE_BYTES = 2 << 30
DEFAULT_CONTEXT_LENGTH = 2048
QUANTIZED_AT_ONCE_PARAMETERS = 500_000_000
"""Models up to this size are quantized for 4-bit drafts when first loaded (SmolLM2's 135
million parameters: ~1 s); larger ones draft once their 4-bit layers are cached (see
`wants_int4_layers`)."""


class WeightsNotAvailableError(RuntimeError):
    """Generation was asked of a model loaded without weights; the message says how to get them."""


SameBitsOnAnyThreads = Literal["every pass", "short passes", "decode passes", "no pass"]
"""Which passes give the same logits on any number of threads (see `ModelEngine.__init__`)."""


class ModelEngine:
    """Owns a tokenizer and a model; generates on the caller's thread (one caller at a time)."""

    def __init__(
        self,
        source: ModelSource,
        tokenizer: DocumentTokenizer,
        model: nn.Module,
        config: Any,
        *,
        has_weights: bool,
        eos_token_ids: frozenset[int],
        weights: WeightFormat = "fp32",
        checks_drafts: bool = False,
        same_bits_on_any_threads: SameBitsOnAnyThreads = "no pass",
    ) -> None:
        """`checks_drafts`: the model computes every position of a pass that checks drafts as a
        one-token pass would (int4 layers, or our fp32 kernel; row-by-row attention), so drafted
        tokens can be checked. `same_bits_on_any_threads`: which passes give the same logits on
        any number of threads (int4 layers: every pass; our fp32 kernel: decode passes, and
        prompt passes as short where every decoder layer runs in one call of it, not a long
        prompt's torch products); those may run on the thread count that is fastest at the
        time, the others run on all threads, so that the greedy text never depends on the
        machine's load."""
        self.source = source
        self.tokenizer = tokenizer
        self.model = model
        self.config = config
        self.has_weights = has_weights
        self.weights = weights
        self.eos_token_ids = eos_token_ids
        self.context_length = _context_length(config)
        kv_bytes = kv_bytes_per_token(config)  # fp32, whatever the checkpoint's dtype
        # Cached prompts stay while another completion as long as the last would still fit.
        self._prompt_cache = PromptCache(
            max_tokens=max(1, PROMPT_CACHE_BYTES // kv_bytes),
            memory_is_short=lambda tokens: memory_is_short(room_for_a_completion(kv_bytes, tokens)),
        )
        self._decoder = GreedyDecoder(
            model,
            tokenizer,
            eos_token_ids,
            self._prompt_cache,
            drafts_until=exact_rows_until(config, self.context_length) if checks_drafts else 0,
            pass_planner=_pass_planner(same_bits_on_any_threads),
            short_prompts_on_any_threads=same_bits_on_any_threads == "short passes",
        )
        self._same_bits_on_any_threads = same_bits_on_any_threads
        self.threads = torch.get_num_threads()
        """The torch thread count it runs on (passes may take fewer, see `pass_planner`)."""

    @classmethod
    def load(
        cls,
        source: ModelSource,
        *,
        tokenizer: DocumentTokenizer | None = None,
        threads: int = 0,
        progress: ProgressCallback | None = None,
        weights: WeightFormat = "fp32",
        stop: StopCheck | None = None,
    ) -> ModelEngine:
        """Load tokenizer, config and model (blocking). `threads=0` means one per physical core.

        `tokenizer`: the source's, when the caller has loaded it already. fp32 is the default:
        lower precisions change the greedy text, and many CPUs have no native bf16.
        "int4" stores the decoder's linear layers in 4 bits (see `quantize`). `stop`: once it
        says the load is no longer wanted, a wait for another process making the 4-bit layers
        ends in `LoadStopped`.
        """
        report = progress or ignore_progress
        started = time.perf_counter()
        keep_freed_memory_for_reuse()  # before the weights are allocated under the defaults
        torch.set_num_threads(torch_thread_count(threads))
        if tokenizer is None:
            report(ProgressUpdate("loading", f"Loading the tokenizer of {source.name}", 0.0))
            tokenizer = DocumentTokenizer.from_dir(source.tokenizer_dir)
        config = read_config(source)
        tokenizer_seconds = time.perf_counter() - started
        # Before the weights: one that cannot be read fails the load, better not after minutes.
        eos_token_ids = tokenizer.eos_token_ids | _configured_eos_ids(source, config)
        # From the config, before the weights (Phi-3-mini's: tens of seconds) are read.
        _check_vocabulary(source, tokenizer, getattr(config.get_text_config(), "vocab_size", None))
        if source.weights_dir is not None:  # a file cut short, named before it is read
            check_weight_files(source.weights_dir)
        bf16_held = weights == "fp32" and _keeps_bf16_weights(source.weights_dir)
        if source.weights_dir is not None:
            source = _without_weights_beyond_memory(source, config, weights, bf16_held)
        model = _build_model(source, config, weights, report, bf16_held, stop)
        # Again by the rows built: a remote-code model's config may size them under another name.
        embedding = input_embedding(model)
        if embedding is not None:
            _check_vocabulary(source, tokenizer, embedding.num_embeddings)
        rows_alike = weights == "fp32" and reads_rows_alike(model)
        same_bits: SameBitsOnAnyThreads = "no pass"
        if weights == "int4":
            same_bits = "every pass"
        elif rows_alike:
            same_bits = "short passes" if every_layer_in_one_call(model) else "decode passes"
        engine = cls(
            source,
            tokenizer,
            model,
            config,
            has_weights=source.weights_dir is not None,
            eos_token_ids=eos_token_ids,
            weights=weights,
            # torch's fp32 products round a row differently beside other rows, ours do not.
            checks_drafts=(weights == "int4" or rows_alike) and attend_row_by_row(model),
            same_bits_on_any_threads=same_bits,
        )
        report(ProgressUpdate("loading", f"{source.name} is ready", 1.0))
        log.info(
            "Loaded %s (%s, %s parameters, %s weights, %s) in %.2f s (tokenizer and config "
            "%.2f s), %d torch threads, keys and values kept for up to %s prompt tokens",
            source.name,
            type(model).__name__,
            f"{count_parameters(model):,}",
            weights,
            "weights" if engine.has_weights else "no weights",
            time.perf_counter() - started,
            tokenizer_seconds,
            torch.get_num_threads(),
            f"{engine.prompt_cache_tokens:,}",
        )
        return engine

    def load_drafter(self) -> bool:
        """Load the 4-bit copy of the model that drafts tokens for fp32's decode passes to check
        (see `model_drafts`): the same text in fewer fp32 passes. Returns whether drafts are
        used now.

        Only for an fp32 model with weights whose passes check drafts, on a CPU where our 4-bit
        kernels run (elsewhere torch's 4-bit pass costs ~0.6 of an fp32 one, and drafts from the
        text do better: SmolLM2 as on an AVX2 CPU, 17 reference prompts, 26.3-28.0 tok/s with
        4-bit drafts against 29.5 without); where the 4-bit form fits in the memory left; and
        where its layers are in the cache or quick to make: quantizing Phi-3-mini takes 35-50 s,
        which would hold up completions (they run on this thread); see `wants_int4_layers`.
        """
        if not self.takes_int4_drafts:
            return False
        if self.drafts_from_int4:
            return True
        quantizing = not self._int4_layers_cached()
        if quantizing and count_parameters(self.model) > QUANTIZED_AT_ONCE_PARAMETERS:
            log.info("%s decodes without 4-bit drafts until its 4-bit layers are made", self.name)
            return False
        if not drafter_fits(self.model, self._checkpoint_bytes() if quantizing else 0):
            log.info("%s decodes without 4-bit drafts: they would not fit in memory", self.name)
            return False
        started = time.perf_counter()
        drafts = _build_model(self.source, self.config, "int4", ignore_progress, False)
        drafter = ModelDrafter(drafts)
        drafter.warm_up(self._warm_up_prompt()[-1])
        self._decoder.drafter = drafter
        log.info(
            "%s decodes with 4-bit drafts (loaded in %.2f s, %.2f GB)",
            self.name,
            time.perf_counter() - started,
            weights_bytes(self.model, "int4") / 1e9,
        )
        return True

    def drop_drafter(self) -> None:
        """Decode without the 4-bit drafts from now on (the same text, in more passes)."""
        self._decoder.drafter = None
        log.info("%s decodes without 4-bit drafts", self.name)

    def drafter_files(self) -> list[Path]:
        """The files `load_drafter` would read its 4-bit layers from (none when it would not
        load them from the cache, or they would not fit in memory), for `read_ahead` to fetch
        from the disk beforehand."""
        if (
            not self.takes_int4_drafts
            or self.drafts_from_int4
            or not self._int4_layers_cached()
            or not drafter_fits(self.model)
        ):
            return []
        entry = self._int4_entry()
        assert entry is not None  # cached layers have a checkpoint
        return [entry / TENSORS_FILE]

    def wants_int4_layers(self) -> bool:
        """True when the model would take 4-bit drafts once its 4-bit layers are in the cache,
        and another process can make them in the memory left (`phi3-lsp quantize`)."""
        if (
            not self.takes_int4_drafts
            or self.drafts_from_int4
            or self.source.trust_remote_code  # the other process would have to trust it
            or self._int4_layers_cached()
        ):
            return False
        weights_dir = self.source.weights_dir
        from_files = weights_dir is not None and stored_in_bf16(weights_dir)
        if not quantizing_fits(self.model, self._checkpoint_bytes(), from_files):
            log.info("%s: making its 4-bit layers would not fit in memory", self.name)
            return False
        return True

    @property
    def takes_int4_drafts(self) -> bool:
        """Whether the model decodes with 4-bit drafts once they are loaded: fp32 with weights
        whose passes check drafts, on a CPU where our 4-bit kernels run (see `load_drafter`)."""
        return (
            self.weights == "fp32"
            and self.has_weights
            and self.drafts_until > 0
            and own_kernels() is not None  # cheap 4-bit passes (see `load_drafter`)
        )

    def _checkpoint_bytes(self) -> int:
        weights_dir = self.source.weights_dir
        return 0 if weights_dir is None else checkpoint_bytes(weights_dir)

    def _int4_layers_cached(self) -> bool:
        entry = self._int4_entry()
        return entry is not None and is_built(entry)

    def _int4_entry(self) -> Path | None:
        weights_dir = self.source.weights_dir
        return None if weights_dir is None else int4_entry(weights_dir)

    @property
    def drafts_from_int4(self) -> bool:
        """Whether decode passes check tokens drafted by the model's 4-bit copy."""
        return self._decoder.drafter is not None

    @property
    def prompt_cache_tokens(self) -> int:
        """How many tokens of recent prompts the engine keeps keys and values for, at most."""
        return self._prompt_cache.max_tokens

    @property
    def pass_planner(self) -> PassPlanner:
        """How decode passes are planned, with the timings so far."""
        return self._decoder.planner

    @property
    def drafts_until(self) -> int:
        """Context length up to which drafted tokens are checked in one pass (0: never)."""
        return self._decoder.drafts_until

    @property
    def name(self) -> str:
        """The model's display name."""
        return self.source.name

    def generate(
        self,
        prompt_ids: list[int],
        *,
        max_new_tokens: int = 50,
        stop_event: threading.Event | None = None,
        on_text: TextCallback | None = None,
        cache_key: str | None = None,
        one_line: bool = False,
        on_prompt_read: PromptReadCallback | None = None,
        limit: TokenLimit | None = None,
    ) -> Generation:
        """The greedy continuation of `prompt_ids` (only new text; at most `max_new_tokens`).

        Stops at an end-of-sequence token, at the limit (or at `limit`, lowered meanwhile),
        within one decoder layer of
        `stop_event` being set (keeping the prompt chunks it finished for the next call with
        `cache_key`; a `StopRequest` may let the chunk in flight finish first), or
        (`one_line`) after the first token holding a line break.
        `on_text` receives the text as it is decoded, whole characters only; `on_prompt_read`
        how much of the prompt is read, after each decoder layer of its passes. With `cache_key`
        (e.g. a document URI) the keys and values of the previous call with that key are
        reused for the shared token prefix. Run on one thread at a time.
        """
        if not self.has_weights:
            raise WeightsNotAvailableError(
                self.source.missing_weights_hint
                or f"{self.source.name} was loaded without weights: completions need weights."
            )
        if len(prompt_ids) + max_new_tokens > self.context_length:
            room = self.context_length - len(prompt_ids)
            fix = f"ask for at most {room} new tokens" if room > 0 else "shorten the prompt"
            raise ValueError(
                f"A prompt of {len(prompt_ids)} tokens plus {max_new_tokens} new tokens exceeds "
                f"the context length of {self.context_length} tokens; {fix}."
            )
        return self._decoder.generate(
            prompt_ids,
            max_new_tokens=max_new_tokens,
            stop_event=stop_event,
            on_text=on_text,
            cache_key=cache_key,
            one_line=one_line,
            on_prompt_read=on_prompt_read,
            limit=limit,
        )

    def read_prompt(
        self,
        prompt_ids: list[int],
        *,
        cache_key: str,
        stop_event: threading.Event | None = None,
        on_prompt_read: PromptReadCallback | None = None,
    ) -> PromptRead:
        """Keep the keys and values of `prompt_ids` under `cache_key` for a later `generate`
        (see `GreedyDecoder.read`). Run on the thread that runs `generate`."""
        if not self.has_weights:
            raise WeightsNotAvailableError(
                self.source.missing_weights_hint
                or f"{self.source.name} was loaded without weights: reading needs weights."
            )
        if len(prompt_ids) > self.context_length:
            raise ValueError(
                f"A prompt of {len(prompt_ids)} tokens exceeds the context length of "
                f"{self.context_length} tokens; shorten the prompt."
            )
        return self._decoder.read(
            prompt_ids, cache_key=cache_key, stop_event=stop_event, on_prompt_read=on_prompt_read
        )

    def hold_weights_compactly(self) -> None:
        """Hold the fp32 weights that are exact Q4_1 or Q8_0 blocks as those blocks, with the same
        bits (`fp32_products.hold_as_blocks`; SmolLM2's: 112 MB instead of 538, decode passes ~2x
        as fast). On the model thread after ready: it takes ~0.15 s, which time to ready would
        otherwise pay. Nothing for other models, nor again (held weights are no longer fp32)."""
        kernel = own_fp32_kernel() if self.weights == "fp32" else None  # int4 builds none
        if kernel is None:
            return
        held = hold_as_blocks(self.model, kernel)
        if held:
            run_layers_in_one_call(self.model)  # the layers in one call read the blocks
            log.info("%s: %d fp32 linear weights held as exact blocks", self.name, held)

    def warm_up(self, stop_event: threading.Event | None = None) -> None:
        """Run a tiny generation, so the first real one pays for no lazy initialization, and
        time a decode pass on each thread count the planner may choose. Once `stop_event` is set
        it stops within a layer: a real generation then pays what is left, as it would have.

        The first pass sets up kernels and buffers and maps the weights' pages (~0.15 s on
        Phi-3-mini-sized int4, ~0.3 s in fp32), which would otherwise land on the user's first
        completion. The decode passes after it take their usual time (Phi-3-mini-sized: 53 and
        92 ms against 55 and 93 later), so one generation does both: the prompt's pass, then one
        pass on each thread count.
        """
        prompt = self._warm_up_prompt()
        thread_counts = len(self._decoder.planner.thread_counts)
        warm = self._decoder.generate(
            prompt, max_new_tokens=1 + thread_counts, stop_event=stop_event
        )
        if warm.finish_reason == "stopped":
            log.info(
                "The warm-up of %s stopped early, for a request, a reload or the shutdown",
                self.name,
            )
            return
        log.info(
            "Decode passes choose among %s torch threads; a 1-token pass took %s",
            ", ".join(map(str, self._decoder.planner.thread_counts)),
            ", ".join(
                f"{seconds * 1e3:.1f} ms on {threads}"
                for threads, seconds in self._decoder.planner.one_token_seconds().items()
            )
            or "no time (the model stopped at once)",
        )

    def _warm_up_prompt(self) -> list[int]:
        return self.tokenizer.encode_prompt("Hello, world") or [0]

    @property
    def prompt_bits_depend_on_threads(self) -> bool:
        """Whether a prompt's keys and values differ in their bits with the thread count."""
        return self._same_bits_on_any_threads != "every pass"

    def use_threads(self, threads: int) -> None:
        """Run on `threads` torch threads from now on (0: one per physical core), with the
        weights as they are. Passes over prompts whose bits depend on the thread count would
        now give other keys and values than those cached: those are dropped, so that the text
        stays the one a cold run on the new count gives."""
        wanted = torch_thread_count(threads)
        if wanted == self.threads:  # e.g. 0 and the number of cores
            return
        torch.set_num_threads(wanted)
        self.threads = torch.get_num_threads()
        self._decoder.planner = _pass_planner(self._same_bits_on_any_threads)
        if self.prompt_bits_depend_on_threads:
            self._prompt_cache.clear()
        log.info(
            "%s now runs on %d torch thread%s",
            self.name,
            self.threads,
            "" if self.threads == 1 else "s",
        )

    def forget_prompt(self, cache_key: str) -> None:
        """Free the cached keys and values kept for `cache_key` (e.g. a closed document)."""
        self._prompt_cache.discard(cache_key)

    def read_weights(self) -> WeightReads:
        """How fast the weights a decode pass multiplies read from this process's memory."""
        return time_weight_reads(self.model)

    def architecture(self) -> ArchitectureReport:
        """The module tree, config summary and parameter counts (weights or not)."""
        return describe_model(
            self.model, self.config, name=self.source.spec, weights_loaded=self.has_weights
        )


def _build_model(
    source: ModelSource,
    config: Any,
    weights: WeightFormat,
    report: ProgressCallback,
    bf16_held: bool,
    stop: StopCheck | None = None,
) -> nn.Module:
    """The model in eval mode: from the weights, or on the meta device when there are none.
    `bf16_held`: an fp32 model keeps its linear weights and input embedding in bf16. `stop`
    ends a wait for another process's 4-bit layers (see `load_int4`)."""
    # Our own progress reports replace transformers' terminal bars, which would only clutter
    # a language server's stderr.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    model: nn.Module
    if source.weights_dir is None:
        report(ProgressUpdate("loading", f"Building {source.name} without weights", 0.3))
        model = _meta_model(source, config)
    elif weights == "int4":
        weights_dir = source.weights_dir
        report(ProgressUpdate("loading", f"Loading the weights of {source.name}", 0.3))
        # From the checkpoint's own dtype: a bf16 checkpoint never needs a full fp32 copy in
        # memory (Phi-3-mini: 7.6 GB instead of 15 GB).
        model = load_int4(
            lambda: _from_pretrained(source, weights_dir, config, "auto"),
            weights_dir,
            lambda step: report(ProgressUpdate("loading", f"{source.name}: {step}", 0.5)),
            lambda: _meta_model(source, config),
            stop,
        )
        share_products(model)
        lean_decoding(model)
        # Builds our kernels on a first start (~1 s), not in the first completion.
        run_layers_in_one_call(model)
    else:
        report(ProgressUpdate("loading", f"Loading the weights of {source.name}", 0.3))
        dtype = torch.bfloat16 if bf16_held else torch.float32
        model = _from_pretrained(source, source.weights_dir, config, dtype)
        if bf16_held:
            keep_bf16_weights(model)
        kernel = own_fp32_kernel()  # built on a first start (~0.4 s), not in a completion
        if kernel is not None:
            read_at_memory_speed(model, kernel)
            run_layers_in_one_call(model)
    run_stack_in_one_go(model)  # where every layer runs in one call
    model.eval()
    return model


def _check_vocabulary(source: ModelSource, tokenizer: DocumentTokenizer, rows: object) -> None:
    """Raise `ModelSourceError` when the tokenizer gives ids beyond the model's `rows` of
    embeddings (not checked when `rows` is not a number): each completion would fail on them.
    Fewer ids are fine: rows are often padded (Phi-3-mini's to 32,064)."""
    if isinstance(rows, int) and tokenizer.id_count > rows:
        raise ModelSourceError(
            f"{source.tokenizer_dir}'s tokenizer has ids up to {tokenizer.id_count - 1} but the "
            f"model's vocabulary has {rows} — the tokenizer belongs to another model: give "
            f"{source.name} its own tokenizer.json, or {SPEC_HELP}."
        )


def _without_weights_beyond_memory(
    source: ModelSource, config: Any, weights: WeightFormat, bf16_held: bool
) -> ModelSource:
    """`source`, or `source` without weights and with the reason when they would not fit."""
    available = available_memory()
    model = _meta_model(source, config)
    shortfall = memory_shortfall(
        source.name,
        model,
        weights,
        available,
        bf16_held=bf16_held,
        find_others=other_phi3_processes,
    )
    log.info(
        "%s in %s: weights %.2f GB%s, memory available %s%s",
        source.name,
        weights,
        weights_bytes(model, weights, bf16_held=bf16_held) / 1e9,
        " (linear layers and input embedding in bf16)" if bf16_held else "",
        "unknown" if available is None else f"{available / 1e9:.2f} GB",
        "" if shortfall is None else ": loading it without weights",
    )
    if shortfall is None:
        return source
    return replace(source, weights_dir=None, missing_weights_hint=shortfall)


def architecture_before_weights(source: ModelSource) -> ArchitectureReport:
    """What `ModelEngine.load(source).architecture()` will report in fp32, known from the
    config alone while the weights still download, convert or load (minutes for Phi-3-mini):
    built on the meta device, with the weights in the dtypes the load will keep them in, and
    said to be pending where they are to come."""
    config = read_config(source)
    if source.weights_dir is not None:  # on disk: as the load will decide
        bf16_held = _keeps_bf16_weights(source.weights_dir)
    elif source.weights_pending:  # to come, stored as their config says
        declared = getattr(config, "dtype", None)
        bf16_held = declared == torch.bfloat16 and own_fp32_kernel() is not None
    else:  # none to come: the load builds the model in fp32
        bf16_held = False
    model = _meta_model(source, config, torch.bfloat16 if bf16_held else torch.float32)
    if bf16_held:
        keep_bf16_weights(model)
    coming = source.weights_pending or source.weights_dir is not None
    return describe_model(
        model, config, name=source.spec, weights_loaded=False, weights_pending=coming
    )


def _keeps_bf16_weights(weights_dir: Path | None) -> bool:
    """Whether fp32 keeps the checkpoint's weights in bf16 where our kernel widens them as it
    reads them: fp32's arithmetic in half the memory (see `fp32_products`)."""
    return (
        weights_dir is not None
        and own_fp32_kernel() is not None  # built on a first start (~0.4 s)
        and stored_in_bf16(weights_dir)
    )


def _meta_model(source: ModelSource, config: Any, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The model's modules with parameters in `dtype` on the meta device: shapes, no memory."""
    # A copy: `from_config` sets the config's dtype, which a later `from_pretrained` with
    # dtype "auto" would then load in (Phi-3-mini's bf16 checkpoint as 15 GB of fp32).
    # No dtype there: it would set torch's default dtype for the whole process while it builds,
    # and the architecture's preview builds beside a load (whose weights would take it).
    with torch.device("meta"):
        model: nn.Module = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            copy.deepcopy(config), dtype=None, trust_remote_code=source.trust_remote_code
        )
    return model.to(dtype)


def _from_pretrained(
    source: ModelSource, weights_dir: Path, config: Any, dtype: torch.dtype | str
) -> nn.Module:
    # With output_loading_info, a pair its annotations do not know of.
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        weights_dir,
        config=config,
        dtype=dtype,
        trust_remote_code=source.trust_remote_code,
        output_loading_info=True,
        # Refused below, with their names: transformers' own refusal points at a table on
        # stderr and at an option the user never set.
        ignore_mismatched_sizes=True,
    )
    model: nn.Module = loaded[0]
    # transformers leaves a weight the files lack as it was made, random, and says so only in
    # a table on stderr: the model would answer noise as if it were ready.
    missing = sorted(loaded[1]["missing_keys"])
    if missing:
        raise ModelSourceError(_missing_weights_message(source, weights_dir, model, missing))
    mismatched = sorted(loaded[1]["mismatched_keys"])
    if mismatched:
        name, stored, expected = mismatched[0]
        raise ModelSourceError(
            f"The weights in {weights_dir} do not fit {source.name}'s config.json: "
            f"{len(mismatched)} tensors have other shapes ({name}: {tuple(stored)} in the "
            f"files, {tuple(expected)} by the config). Check that config.json belongs to "
            "these weights."
        )
    return model


def _missing_weights_message(
    source: ModelSource, weights_dir: Path, model: nn.Module, missing: list[str]
) -> str:
    expected = len(model.state_dict())
    return (
        f"The weights in {weights_dir} are not {source.name}'s: {len(missing)} of its "
        f"{expected} tensors are not there ({', '.join(missing[:2])}"
        f"{', …' if len(missing) > 2 else ''}), so they would answer with random values. "
        "Check that config.json belongs to these weights (an adapter or an export that renamed "
        "its tensors is not a whole model)."
    )


def _pass_planner(same_bits_on_any_threads: SameBitsOnAnyThreads) -> PassPlanner:
    """A planner for the current torch thread count: decode passes whose bits do not depend on
    the thread count may move to fewer threads (see `ModelEngine.__init__`)."""
    threads = torch.get_num_threads()
    return PassPlanner(
        decode_thread_counts(threads) if same_bits_on_any_threads != "no pass" else (threads,),
        prompts_on_all_threads=same_bits_on_any_threads in ("short passes", "decode passes"),
    )


def decode_thread_counts(threads: int) -> tuple[int, ...]:
    """The thread counts a decode pass may run on: all, half and one (see `pass_planner`)."""
    return tuple(sorted({1, max(1, threads // 2), threads}))


def _context_length(config: Any) -> int:
    text = config.get_text_config()
    length = getattr(text, "max_position_embeddings", None)
    return int(length) if isinstance(length, int) and length > 0 else DEFAULT_CONTEXT_LENGTH


def _configured_eos_ids(source: ModelSource, config: Any) -> frozenset[int]:
    """End-of-sequence ids from the model config and generation_config.json."""
    ids = set(_as_id_list(getattr(config, "eos_token_id", None)))
    for folder in (source.weights_dir, source.config_dir):
        if folder is not None and (folder / "generation_config.json").is_file():
            ids.update(_as_id_list(_generation_config_eos(folder / "generation_config.json")))
    return frozenset(ids)


def _generation_config_eos(file: Path) -> object:
    """The `eos_token_id` of a generation_config.json; one it cannot read names itself."""
    try:
        generation = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
        problem: str = f"{type(error).__name__}: {error}"
    else:
        if isinstance(generation, dict):
            return generation.get("eos_token_id")
        problem = f"a JSON {type(generation).__name__}, not an object"
    # It names where answers end: without it, they would run on past the model's last word.
    raise ModelSourceError(
        f"{file} cannot be read ({problem}). Fix it, or delete it if the model's config.json "
        "names its end-of-sequence tokens."
    )


def _as_id_list(value: object) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, int)]
    return []
