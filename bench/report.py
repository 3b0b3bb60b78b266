"""Turn the figures of one model (server and baselines) into table rows, with targets checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from bench.lsp_session import Completion
from bench.memory_floor import MemoryFloor
from bench.server_runs import (
    KEYSTROKE_SECONDS,
    LONG_EDIT_CONTEXT_TOKENS,
    LONG_EDIT_LINES,
    MOVED_AFTER_SECONDS,
    TYPED_WHILE_READING,
    PromptFigures,
    ServerFigures,
)
from bench.stats import median, percentile, rate
from bench.table import (
    NOT_RUN,
    Row,
    format_duration,
    format_kib,
    format_rate,
    verdict,
)
from bench.workload import BaselineResult, PromptTimings

TYPING_TARGET_SECONDS = 0.010
EDIT_TARGET_RATIO = 1.3
HOVER_P99_TARGET_SECONDS = 0.010
INITIALIZE_TARGET_SECONDS = 0.3
READY_TARGET_SECONDS = 3.0
FLOOR_TARGET_RATIO = 1.5


@dataclass(frozen=True)
class SpeedFigures:
    """Medians for one system at one prompt size."""

    first_token_seconds: float | None
    full_seconds: float | None
    full_tokens: float | None
    prefill_rate: float | None
    decode_rate: float | None


def speed_figures(
    first_token: Sequence[float],
    full: Sequence[float],
    tokens: Sequence[int],
    prompt_tokens: float,
    decodes: Sequence[tuple[int, float]],
) -> SpeedFigures:
    """Prefill rate = prompt tokens / first-token time. Decode rate = the median over full
    answers of the tokens after the first over the time they took, timed within that answer
    (`decodes`: new tokens and decode seconds per answer), so it does not depend on how alike
    the separate first-token runs were."""
    first = median(first_token) if first_token else None
    whole = median(full) if full else None
    count = median(tokens) if tokens else None
    prefill = rate(prompt_tokens, first) if first is not None else None
    rates = [(new - 1) / seconds for new, seconds in decodes if new > 1 and seconds > 0]
    decode = median(rates) if rates else None
    return SpeedFigures(first, whole, count, prefill, decode)


def server_speed(figures: PromptFigures, prompt_tokens: float) -> SpeedFigures:
    tokens = [_new_tokens(completion) for completion in figures.full]
    decodes = [
        (new, seconds)
        for completion in figures.full
        if (new := _new_tokens(completion)) is not None
        and (seconds := _decode_seconds(completion)) is not None
    ]
    return speed_figures(
        [completion.seconds for completion in figures.first_token],
        [completion.seconds for completion in figures.full],
        [count for count in tokens if count is not None],
        prompt_tokens,
        decodes,
    )


def baseline_speed(timings: PromptTimings | None) -> SpeedFigures | None:
    if timings is None or not timings.full_seconds:
        return None
    decodes = [
        (new, seconds)
        for new, seconds in zip(timings.full_new_tokens, timings.full_decode_seconds, strict=True)
        if seconds is not None
    ]
    return speed_figures(
        timings.first_token_seconds,
        timings.full_seconds,
        timings.full_new_tokens,
        median(timings.prompt_tokens),
        decodes,
    )


def _new_tokens(completion: Completion) -> int | None:
    status = completion.status or {}
    count = status.get("lastTokens")
    return int(count) if isinstance(count, int | float) else None


def _decode_seconds(completion: Completion) -> float | None:
    """The server's own time for the passes after the prompt's, in that completion's run."""
    milliseconds = (completion.status or {}).get("lastDecodeMs")
    return milliseconds / 1000 if isinstance(milliseconds, int | float) and milliseconds else None


def _decode_passes(completion: Completion) -> int | None:
    """The server's forward passes after the prompt's, in that completion's run."""
    passes = (completion.status or {}).get("lastDecodePasses")
    return passes if isinstance(passes, int) else None


def _passes_detail(completions: Sequence[Completion]) -> str:
    """Median decode passes beside the tokens they decoded (fewer when drafts were kept)."""
    pairs = [
        (passes, tokens - 1)
        for completion in completions
        if (passes := _decode_passes(completion)) is not None
        and (tokens := _new_tokens(completion)) is not None
    ]
    if not pairs:
        return ""
    median_passes = median([pair[0] for pair in pairs])
    median_tokens = median([pair[1] for pair in pairs])
    return f"; {median_passes:.0f} passes for {median_tokens:.0f} tokens"


def _timings(result: BaselineResult | None, label: str) -> PromptTimings | None:
    if result is None:
        return None
    return next((prompt for prompt in result.prompts if prompt.label == label), None)


@dataclass(frozen=True)
class ModelReport:
    """All that was measured for one model in this run."""

    model: str
    server: ServerFigures
    prompt_tokens: dict[str, float]  # median prompt tokens per prompt label
    seed: BaselineResult | None
    seed_missing: str  # what the seed cells say when a figure was not measured
    llama_cpp: BaselineResult | None
    llama_cpp_missing: str
    bare_initialize_seconds: list[float]
    speedup_target: float  # a full answer this many times faster than the seed pipeline
    floor_target: bool = True  # the floor target is Phi-3-mini-sized decoding's


def model_rows(report: ModelReport) -> list[Row]:
    """The table rows of one model."""
    server = report.server
    initialize, ready = median(server.initialize_seconds), median(server.ready_seconds)
    bare_initialize = format_duration(median(report.bare_initialize_seconds))
    rows = [
        Row(
            "initialize latency (spawn → initialize result)",
            report.model,
            "",
            f"{format_duration(initialize)} (a bare pygls server: {bare_initialize})",
            target=f"< {INITIALIZE_TARGET_SECONDS:g} s",
            verdict=verdict(initialize < INITIALIZE_TARGET_SECONDS),
        ),
        Row(
            "time to ready (spawn → ready, weights from cache)",
            report.model,
            "",
            _with_range(ready, server.ready_seconds),
            seed=_baseline_load(report.seed, report.seed_missing),
            llama_cpp=_baseline_load(report.llama_cpp, report.llama_cpp_missing),
            target=f"< {READY_TARGET_SECONDS:g} s",
            verdict=verdict(ready < READY_TARGET_SECONDS),
        ),
        Row(
            "first hover with tokens (spawn → answer, while the model loads)",
            report.model,
            "",
            format_duration(median(server.first_hover_seconds)),
        ),
        *(
            []
            if server.first_ready_seconds is None
            else [
                Row(
                    "time to ready, first int4 start (makes the 4-bit layers, then cached)",
                    report.model,
                    "",
                    format_duration(server.first_ready_seconds),
                )
            ]
        ),
        Row(
            "loopback round trip (hover, 1-line document)",
            report.model,
            "",
            format_duration(median(server.transport_seconds)),
        ),
    ]
    first_prompt = server.prompts[0] if server.prompts else None
    if first_prompt is not None and first_prompt.warmup is not None:
        answered = first_prompt.warmup.seconds
        # The measured start is the last one timed.
        from_spawn = (
            f" ({format_duration(server.ready_seconds[-1] + answered)} from spawn)"
            if server.ready_seconds
            else ""
        )
        rows.append(
            Row(
                "first completion, asked at ready (cold, full answer)",
                report.model,
                first_prompt.label,
                format_duration(answered) + from_spawn,
            )
        )
    for prompt in server.prompts:
        rows.extend(_prompt_rows(report, prompt))
    rows.extend(_long_document_edit_rows(report))
    rows.extend(_hover_rows(report))
    if server.cancel_seconds:
        rows.append(_cancel_row(report))
    rows.append(
        Row(
            "peak RSS (VmHWM)",
            report.model,
            "",
            format_kib(server.peak_rss_kib),
            seed=_baseline_rss(report.seed, report.seed_missing),
            llama_cpp=_baseline_rss(report.llama_cpp, report.llama_cpp_missing),
        )
    )
    rows.append(
        Row(
            "resident memory (VmRSS): when ready / at the end, every document closed",
            report.model,
            "",
            f"{format_kib(server.ready_rss_kib)} / {format_kib(server.closed_rss_kib)}",
        )
    )
    return rows


def _baseline_load(result: BaselineResult | None, missing: str) -> str:
    return format_duration(result.load_seconds) + " (load)" if result else missing


def _baseline_rss(result: BaselineResult | None, missing: str) -> str:
    return format_kib(result.peak_rss_kib) if result else missing


def _prompt_rows(report: ModelReport, prompt: PromptFigures) -> list[Row]:
    tokens = report.prompt_tokens[prompt.label]
    label = f"{prompt.label} ({tokens:.0f} tok)"
    server = server_speed(prompt, tokens)
    seed = baseline_speed(_timings(report.seed, prompt.label))
    llama = baseline_speed(_timings(report.llama_cpp, prompt.label))

    def cells(pick: str, fmt: str) -> tuple[str, str, str]:
        values = []
        for figures, missing in (
            (server, NOT_RUN),
            (seed, report.seed_missing),
            (llama, report.llama_cpp_missing),
        ):
            values.append(_format_speed(figures, pick, fmt) if figures else missing)
        return values[0], values[1], values[2]

    rows = []
    for metric, pick, fmt in (
        ("first token (answer with maxNewTokens 1)", "first_token_seconds", "duration"),
        ("full answer (≤50 new tokens)", "full_seconds", "full"),
        ("prefill speed", "prefill_rate", "rate"),
        ("decode speed", "decode_rate", "rate"),
    ):
        server_cell, seed_cell, llama_cell = cells(pick, fmt)
        if pick == "decode_rate":
            server_cell += _passes_detail(prompt.full)
        row = Row(metric, report.model, label, server_cell, seed_cell, llama_cell)
        if pick == "full_seconds":
            row = _with_speedup(row, server, seed, llama, report.speedup_target)
        rows.append(row)
    if prompt.memory_floors:
        floor_rows = _floor_rows(
            report.model,
            label,
            prompt.full,
            tokens,
            prompt.memory_floors,
            prompt.weight_read_speeds,
        )
        rows.extend(floor_rows if report.floor_target else map(_without_target, floor_rows))
    if prompt.first_answer:
        seconds = median([completion.seconds for completion in prompt.first_answer])
        # The early answer's own length: the status counts the whole generation behind it.
        characters = median([len(completion.text) for completion in prompt.first_answer])
        rows.append(
            Row(
                "first answer (server's default answerBudgetMs)",
                report.model,
                label,
                f"{format_duration(seconds)} (answers of {characters:.0f} characters)",
            )
        )
    rows.extend(_read_at_cursor_rows(report, prompt, label, server, seed))
    rows.extend(_core_taken_rows(report, prompt, label, server))
    rows.extend(_moved_rows(report, prompt, label))
    rows.extend(_typed_on_rows(report, prompt, label))
    rows.extend(_typing_rows(report, prompt, label))
    rows.extend(_edit_rows(report, prompt, label))
    return rows


def _floor_rows(
    model: str,
    label: str,
    full: Sequence[Completion],
    prompt_tokens: float,
    fresh_floors: Sequence[MemoryFloor],
    weight_read_speeds: Sequence[float],
) -> list[Row]:
    """The server's decode time per token and per pass (its own timing of full answers) beside
    the least time a pass can take: its bytes over the speed at which the server read its own
    weights right after each answer (their median), when measured; else over a fresh buffer's
    read speed measured just before and after these answers, the faster of the two (the lower
    floor), which is set beside it either way. On this host the same memory reads at ~35 or
    ~60 GB/s from one minute to the next: the read nearest the passes judges them."""
    runs = [
        (seconds, passes, tokens - 1)
        for completion in full
        if (seconds := _decode_seconds(completion))
        and (passes := _decode_passes(completion))
        and (tokens := _new_tokens(completion)) is not None
        and tokens > 1
    ]
    if not runs:
        return []
    per_token = median([seconds / tokens for seconds, _, tokens in runs])
    per_pass = median([seconds / passes for seconds, passes, _ in runs])
    tokens_in_context = prompt_tokens + median([tokens for _, _, tokens in runs]) / 2
    fresh = max(fresh_floors, key=lambda measured: measured.read_bytes_per_second)
    fresh_speeds = " / ".join(f"{floor.read_bytes_per_second / 1e9:.1f}" for floor in fresh_floors)
    if weight_read_speeds:
        floor = replace(fresh, read_bytes_per_second=median(weight_read_speeds))
        speeds = " / ".join(f"{speed / 1e9:.1f}" for speed in weight_read_speeds)
        fresh_ratio = per_token / fresh.pass_seconds(tokens_in_context)
        beside = (
            f"the server's weights read at {speeds} GB/s right after each answer; a fresh buffer "
            f"in another process at {fresh_speeds} GB/s before and after them: "
            f"{fresh_ratio:.2f}x its floor"
        )
    else:
        floor = fresh
        beside = f"read bandwidth beside these answers: {fresh_speeds} GB/s"
    least = floor.pass_seconds(tokens_in_context)
    ratio = per_token / least
    return [
        Row(
            "decode time per token vs the memory floor of a pass",
            model,
            label,
            f"{format_duration(per_token)} a token ({format_duration(per_pass)} a pass), "
            f"{ratio:.2f}x the floor: {floor.pass_bytes(tokens_in_context) / 1e9:.3g} GB a pass "
            f"at {floor.read_bytes_per_second / 1e9:.1f} GB/s = {format_duration(least)} "
            f"({beside})",
            target=f"≤ {FLOOR_TARGET_RATIO:g}x the floor",
            verdict=verdict(ratio <= FLOOR_TARGET_RATIO),
        )
    ]


def _with_range(median_seconds: float, samples: Sequence[float]) -> str:
    """A median, with the fastest and slowest sample when there are several: starts drift
    with the host more than most figures (e.g. 3.11 to 3.78 s in one run)."""
    if len(samples) < 2:
        return format_duration(median_seconds)
    fastest, slowest = format_duration(min(samples)), format_duration(max(samples))
    return f"{format_duration(median_seconds)} ({fastest} to {slowest} over {len(samples)} starts)"


def _without_target(row: Row) -> Row:
    return replace(row, target="none (the target is Phi-3-mini-sized's)", verdict="")


def _read_at_cursor_rows(
    report: ModelReport,
    prompt: PromptFigures,
    label: str,
    cold: SpeedFigures,
    seed: SpeedFigures | None,
) -> list[Row]:
    """Full answers once the cursor rested at the end (`phi3/readAtCursor` read the text before
    it), beside the cold answers of the same windows and the seed's; the read's own time."""
    if not prompt.read_at_cursor:
        return []
    seconds = median([completion.seconds for completion in prompt.read_at_cursor])
    ratios = [f"{seconds / cold.full_seconds:.2f}x the cold answer"] if cold.full_seconds else []
    if seed is not None and seed.full_seconds:
        ratios.append(f"{seed.full_seconds / seconds:.2f}x the seed's speed")
    read = median(prompt.read_at_cursor_seconds)
    return [
        Row(
            "full answer after the cursor rested there (phi3/readAtCursor read the text first)",
            report.model,
            label,
            f"{format_duration(seconds)}; {'; '.join(ratios)}; the read itself: "
            f"{format_duration(read)}",
        )
    ]


def _core_taken_rows(
    report: ModelReport, prompt: PromptFigures, label: str, idle: SpeedFigures
) -> list[Row]:
    """Full answers while another process keeps a core busy, beside the same answers idle."""
    if not prompt.full_with_core_taken:
        return []
    seconds = median([completion.seconds for completion in prompt.full_with_core_taken])
    ratio = f"; {seconds / idle.full_seconds:.2f}x idle" if idle.full_seconds else ""
    return [
        Row(
            "full answer while another process keeps a core busy",
            report.model,
            label,
            f"{format_duration(seconds)}{ratio}",
        )
    ]


def _moved_rows(report: ModelReport, prompt: PromptFigures, label: str) -> list[Row]:
    """Answers at another line asked while this prompt was read, beside the same answers on an
    idle server: what the stale request still costs once it is cancelled."""
    return _beside_idle_rows(
        f"full answer a third of the way up, asked {MOVED_AFTER_SECONDS:g} s into this prompt",
        report,
        label,
        prompt.moved_while_reading,
        prompt.moved_on_idle,
    )


def _typed_on_rows(report: ModelReport, prompt: PromptFigures, label: str) -> list[Row]:
    """The answer after typing on while this prompt was read, beside the same answer on an idle
    server: how much of the prompt's reading the keystrokes carried over."""
    return _beside_idle_rows(
        f"full answer after typing `{TYPED_WHILE_READING}` on at the end, a keystroke every "
        f"{KEYSTROKE_SECONDS:g} s from the first request (from the last keystroke)",
        report,
        label,
        prompt.typed_while_reading,
        prompt.typed_on_idle,
    )


def _beside_idle_rows(
    metric: str,
    report: ModelReport,
    label: str,
    answers: Sequence[Completion],
    idle_answers: Sequence[Completion],
) -> list[Row]:
    """The median of `answers` and its ratio to the median of the same answers on an idle
    server; no row when none were measured."""
    if not answers:
        return []
    seconds = median([completion.seconds for completion in answers])
    idle = median([completion.seconds for completion in idle_answers])
    return [
        Row(
            metric,
            report.model,
            label,
            f"{format_duration(seconds)}; {seconds / idle:.2f}x the same answer on an idle server "
            f"({format_duration(idle)})",
        )
    ]


def _with_speedup(
    row: Row,
    server: SpeedFigures,
    seed: SpeedFigures | None,
    llama: SpeedFigures | None,
    target: float,
) -> Row:
    """The full-answer row with the server's speed-up over the seed (the target) and llama.cpp."""
    mine = server.full_seconds
    versus_seed = seed.full_seconds / mine if seed and seed.full_seconds and mine else None
    versus_llama = llama.full_seconds / mine if llama and llama.full_seconds and mine else None
    ratios = [
        f"{ratio:.2f}x {name}"
        for ratio, name in ((versus_seed, "the seed"), (versus_llama, "llama.cpp"))
        if ratio is not None
    ]
    return replace(
        row,
        server=row.server + (f"; {', '.join(ratios)}" if ratios else ""),
        target=f"≥ {target:g}x the seed's speed",
        verdict=verdict(versus_seed >= target if versus_seed is not None else None),
    )


def _format_speed(figures: SpeedFigures, pick: str, fmt: str) -> str:
    value = getattr(figures, pick)
    if pick == "decode_rate" and value is None:
        if figures.full_tokens is not None and figures.full_tokens <= 1:
            return "n/a: answers of ≤ 1 token"
        return "not timed"
    if fmt == "rate":
        return format_rate(value)
    text = format_duration(value)
    if fmt == "full" and figures.full_tokens is not None:
        text += f" ({figures.full_tokens:.0f} tok)"
    return text


def _typing_rows(report: ModelReport, prompt: PromptFigures, label: str) -> list[Row]:
    if not prompt.typing_through:
        return [Row("typing through a suggestion", report.model, label, "no suggestion to type")]
    round_trip = median([completion.seconds for completion in prompt.typing_through])
    server_time = round_trip - median(report.server.transport_seconds)
    model_runs = sum(completion.model_runs for completion in prompt.typing_through)
    kept = sum(prompt.typing_through_expected)
    all_kept = kept == len(prompt.typing_through)
    met = server_time < TYPING_TARGET_SECONDS and model_runs == 0 and all_kept
    return [
        Row(
            "typing through a suggestion (1st char typed)",
            report.model,
            label,
            f"{format_duration(round_trip)} round trip, ~{format_duration(max(server_time, 0.0))} "
            f"server; {model_runs} model runs; rest of suggestion returned "
            f"{kept}/{len(prompt.typing_through)}",
            target="< 10 ms server, 0 model runs",
            verdict=verdict(met),
        )
    ]


def _edit_rows(report: ModelReport, prompt: PromptFigures, label: str) -> list[Row]:
    if not prompt.edits:
        return []
    return [_edit_row("after a 1-char edit (KV prefix reuse)", report, label, prompt.edits)]


def _long_document_edit_rows(report: ModelReport) -> list[Row]:
    edits = report.server.long_document_edits
    if not edits:
        return []
    return [
        _edit_row(
            f"after each of {len(edits)} 1-char edits, text longer than the prompt budget",
            report,
            f"{LONG_EDIT_LINES} lines, {LONG_EDIT_CONTEXT_TOKENS}-token budget",
            edits,
            worst=True,
        )
    ]


def _edit_row(
    metric: str, report: ModelReport, label: str, edits: list[Completion], worst: bool = False
) -> Row:
    """Answers after edits, each against the decode time of its own tokens as the server timed
    that run: more than that is prompt computed again. The target holds for the median, or
    with `worst` for every edit (a prompt cut that moves computes it all again now and then)."""
    seconds = median([completion.seconds for completion in edits])
    tokens = [_new_tokens(completion) for completion in edits]
    ratios = [
        completion.seconds / decode_seconds
        for completion in edits
        if (decode_seconds := _decode_seconds(completion))
    ]
    ratio = median(ratios) if ratios else None
    known = [count for count in tokens if count is not None]
    detail = f"{format_duration(seconds)}"
    if known:
        detail += f" ({median(known):.0f} tok)"
    detail += f"; {ratio:.2f}x its decode time" if ratio is not None else "; decode ratio n/a"
    judged = ratio
    if worst and ratios:
        judged = max(ratios)
        detail += f", worst {judged:.2f}x"
    return Row(
        metric,
        report.model,
        label,
        detail,
        target=f"{'each ' if worst else ''}≤ {EDIT_TARGET_RATIO}x decoding its new tokens",
        verdict=verdict(judged <= EDIT_TARGET_RATIO if judged is not None else None),
    )


def _cancel_row(report: ModelReport) -> Row:
    """How soon a cancelled completion gets its reply. The server replies at once and stops
    the model apart from the reply: what that costs the next request is the moved-cursor row."""
    server = report.server
    return Row(
        f"$/cancelRequest → reply to the cancelled completion (median of "
        f"{len(server.cancel_seconds)})",
        report.model,
        "10,000-line file",
        format_duration(median(server.cancel_seconds)),
    )


def _hover_rows(report: ModelReport) -> list[Row]:
    server = report.server
    rows = []
    for name, samples, extra in (
        ("hover, idle", server.hover_idle_seconds, ""),
        (
            "hover, while a completion runs",
            server.hover_busy_seconds,
            f" ({server.busy_completions} completions)",
        ),
        ("hover, first after a 1-char edit", server.hover_after_edit_seconds, ""),
    ):
        if not samples:
            continue
        p99 = percentile(samples, 99)
        rows.append(
            Row(
                f"{name}: p50 / p99 of {len(samples)}{extra}",
                report.model,
                "10,000-line file",
                f"{format_duration(percentile(samples, 50))} / {format_duration(p99)}",
                target="p99 < 10 ms",
                verdict=verdict(p99 < HOVER_P99_TARGET_SECONDS),
            )
        )
    return rows
