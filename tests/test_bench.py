"""The benchmark's pure helpers: statistics, the table, real-source prompts, positions, speeds."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.lsp_session import Completion, end_position, insert_text, utf16_length
from bench.memory_floor import MemoryFloor, fp32_weight_bytes, kv_bytes_per_token
from bench.prompts import (
    cut_to_tokens,
    definition_starts,
    long_document,
    prompt_windows,
    read_source_lines,
    stdlib_file,
)
from bench.report import ModelReport, model_rows, speed_figures
from bench.seed_baseline import FirstTokenClock
from bench.server_runs import PromptFigures, ServerFigures, diverging_character, word_positions
from bench.stats import median, percentile, rate
from bench.table import Row, format_duration, format_kib, format_rate, render_markdown
from bench.workload import (
    Answer,
    BaselineResult,
    PromptTimings,
    PromptWork,
    Workload,
    time_workload,
)

from phi3_lsp.json_values import as_plain


def count_words(text: str) -> int:
    return len(text.split())


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [10.0, 1.0, 4.0, 2.0, 3.0]  # sorted: 1 2 3 4 10
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 10.0
    assert percentile(values, 87.5) == pytest.approx(7.0)  # halfway between 4 and 10
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_p99_of_a_hundred_samples_sees_the_one_slow_hover() -> None:
    samples = [0.002] * 99 + [0.800]
    assert percentile(samples, 50) == 0.002
    assert percentile(samples, 99) > 0.002


def test_statistics_refuse_empty_input_and_bad_quantiles() -> None:
    with pytest.raises(ValueError):
        median([])
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    assert rate(10, 0.0) is None
    assert rate(10, 2.0) == 5.0


def test_table_is_aligned_markdown_with_pipes_escaped() -> None:
    rows = [
        Row("decode speed", "SmolLM2-135M", "~20", "12 tok/s", "11 tok/s", "50 tok/s"),
        Row("hover | p99", "SmolLM2-135M", "", "3 ms", target="< 10 ms", verdict="met"),
    ]
    lines = render_markdown(rows).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("| metric")
    assert set(lines[1]) == {"|", "-"}
    assert "hover \\| p99" in lines[3]
    # Every line has the same width, so the table also reads in a terminal.
    assert len({len(line) for line in lines}) == 1
    assert all(line.count(" | ") >= 7 for line in (lines[0], lines[2]))


def test_formats_pick_units_a_reader_expects() -> None:
    assert format_duration(0.00125) == "1.25 ms"
    assert format_duration(0.0425) == "42.5 ms"
    assert format_duration(3.5) == "3.50 s"
    assert format_duration(None) == "not run"
    assert format_rate(1234.4) == "1,234 tok/s"
    assert format_rate(3.456) == "3.46 tok/s"
    assert format_rate(11.04) == "11 tok/s"
    assert format_kib(2048 * 1024) == "2,048 MiB"


def test_prefill_speed_comes_from_first_tokens_and_decode_speed_from_each_full_answer() -> None:
    # 100 prompt tokens in 0.5 s to the first token. The full answers' prompts took longer
    # (9 s in all), but each decoded its 49 tokens after the first in ~4.9 s: 10 tok/s.
    decodes = [(50, 4.8), (50, 4.9), (50, 5.0)]
    figures = speed_figures([0.4, 0.5, 0.6], [9.0, 9.1, 8.9], [50, 50, 50], 100, decodes)
    assert figures.first_token_seconds == 0.5
    assert figures.full_seconds == 9.0
    assert figures.prefill_rate == pytest.approx(200.0)
    assert figures.decode_rate == pytest.approx(10.0)
    one_token = speed_figures([0.5], [0.5], [1], 100, [(1, 0.0)])
    assert one_token.decode_rate is None
    untimed = speed_figures([0.5], [5.4], [50], 100, [])
    assert untimed.decode_rate is None


def test_the_seed_decode_time_starts_at_its_first_new_token() -> None:
    now = [10.0]
    clock = FirstTokenClock(lambda: now[0])
    clock.put("the prompt's ids")  # generate() hands over the prompt first
    assert clock.decode_seconds(ended=11.0) is None
    now[0] = 12.5
    clock.put("the first new token")
    now[0] = 13.0
    clock.put("the second")
    clock.end()
    assert clock.decode_seconds(ended=14.5) == pytest.approx(2.0)


def test_baselines_keep_each_full_answer_decode_time() -> None:
    work = Workload(max_new_tokens=3, prompts=[PromptWork("~20", ["w"], ["a"], ["b", "c"])])
    asked: list[tuple[str, int]] = []

    def generate(text: str, new_tokens: int) -> Answer:
        asked.append((text, new_tokens))
        return Answer(1.0 + len(asked), 7, new_tokens, 0.25 * len(asked))

    [timing] = time_workload(work, generate)
    assert asked == [("w", 3), ("a", 1), ("b", 3), ("c", 3)]
    assert timing.first_token_seconds == [3.0]
    assert timing.full_seconds == [4.0, 5.0]
    assert timing.full_decode_seconds == [0.75, 1.0]
    assert timing.full_new_tokens == [3, 3]


def test_prompts_are_whole_lines_of_real_source_within_the_budget() -> None:
    lines = read_source_lines(stdlib_file("argparse.py"))
    window = cut_to_tokens(lines, 0, 40, count_words)
    assert window.endswith("\n")
    assert count_words(window) <= 40
    assert "".join(lines).startswith(window)
    next_line = lines[window.count("\n")]
    assert count_words(window + next_line) > 40


def test_windows_start_at_distinct_definitions_so_no_cache_can_answer() -> None:
    lines = read_source_lines(stdlib_file("argparse.py"))
    windows = prompt_windows(lines, 300, 11, count_words)
    assert len(set(windows)) == 11
    assert len({window.splitlines()[0] for window in windows}) == 11
    assert all(window.lstrip().startswith(("def ", "class ")) for window in windows)
    assert all(150 <= count_words(window) <= 300 for window in windows)


def test_fewer_windows_of_the_same_spread_are_the_first_ones() -> None:
    # A quick run times the first windows of a full run, so their rows can be compared.
    lines = read_source_lines(stdlib_file("argparse.py"))
    full = prompt_windows(lines, 300, 16, count_words)
    assert prompt_windows(lines, 300, 7, count_words, spread=16) == full[:7]
    assert prompt_windows(lines, 300, 7, count_words) != full[:7]


def test_definition_starts_skip_repeated_signatures() -> None:
    lines = ["class A:\n", "    def run(self):\n", "class B:\n", "    def run(self):\n"]
    assert definition_starts(lines) == [0, 1, 2]


def test_long_document_has_the_lines_asked_for() -> None:
    text = long_document(10_000)
    assert text.count("\n") == 10_000
    assert "class ArgumentParser" in text


def test_positions_are_utf16_code_units() -> None:
    assert utf16_length("a😀b") == 4  # the emoji is a surrogate pair
    position = end_position("x = 1\ns = 'é😀'")
    assert (position.line, position.character) == (1, 9)
    assert (end_position("a\n").line, end_position("a\n").character) == (1, 0)


def test_a_keystroke_after_an_emoji_lands_after_it() -> None:
    from lsprotocol.types import Position

    text = "a = '😀'\nb = 2\n"
    # "a = '" is 5 code units and the emoji 2 more: column 7 is just before the closing quote.
    assert insert_text(text, Position(line=0, character=7), "!") == "a = '😀!'\nb = 2\n"
    assert insert_text(text, Position(line=1, character=0), "#") == "a = '😀'\n#b = 2\n"


def test_hover_positions_fall_inside_identifiers() -> None:
    text = "def f(x):\n    return x + 1\n\n# é😀 word_after_emoji\n"
    lines = text.split("\n")
    for position in word_positions(text, 30, seed=3):
        line = lines[position.line]
        # Map the UTF-16 column back to a Python index before looking at the character.
        index = 0
        while utf16_length(line[:index]) < position.character:
            index += 1
        assert line[index].isidentifier() or line[index].isdigit()
    assert word_positions(text, 5, seed=3) == word_positions(text, 5, seed=3)


def test_the_edit_after_typing_through_diverges_from_the_suggestion() -> None:
    assert diverging_character("xs = []") != "x"
    assert diverging_character("return 1") == "x"


def test_baseline_work_and_results_survive_the_trip_through_json(tmp_path: Path) -> None:
    work = Workload(50, [PromptWork("~20", ["w"], ["a", "b"], ["c"])])
    work.save(tmp_path / "work.json")
    assert Workload.load(tmp_path / "work.json") == work
    result = BaselineResult(1.5, [PromptTimings("~20", [0.1], [2.0], [50], [18], [1.5])], 1024)
    result.save(tmp_path / "result.json")
    assert BaselineResult.load(tmp_path / "result.json") == result


def test_status_payloads_become_plain_dicts() -> None:
    from collections import namedtuple

    status_type = namedtuple("status_type", ["state", "nested"])
    inner_type = namedtuple("inner_type", ["tokens"])
    assert as_plain(status_type("ready", [inner_type(3)])) == {
        "state": "ready",
        "nested": [{"tokens": 3}],
    }


def edit(seconds: float, decode_ms: int) -> Completion:
    return Completion(seconds, "x", 1, {"lastDecodeMs": decode_ms, "lastTokens": 50})


def test_edits_past_the_budget_miss_the_target_when_any_one_computes_the_prompt_again() -> None:
    def edit_row(edits: list[Completion]) -> Row:
        server = ServerFigures(
            initialize_seconds=[0.9],
            ready_seconds=[8.0],
            first_hover_seconds=[1.2],
            transport_seconds=[0.001],
            long_document_edits=edits,
        )
        report = ModelReport("SmolLM2-135M", server, {}, None, "", None, "", [0.9], 3)
        [row] = [row for row in model_rows(report) if "longer than the prompt budget" in row.metric]
        return row

    reused = [edit(1.04, 1000), edit(1.02, 1000), edit(1.05, 1000)]
    assert edit_row(reused).verdict == "met"
    # The median (1.04x) is within the target, but one edit took 1.8x its decode time.
    row = edit_row([*reused, edit(1.8, 1000)])
    assert row.verdict == "MISSED"
    assert "worst 1.80x" in row.server


def test_start_up_rows_are_judged_against_their_targets() -> None:
    def rows(initialize: float, ready: float) -> dict[str, Row]:
        server = ServerFigures(
            initialize_seconds=[initialize],
            ready_seconds=[ready],
            first_hover_seconds=[1.2],
            transport_seconds=[0.001],
        )
        report = ModelReport("SmolLM2-135M", server, {}, None, "", None, "", [0.87], 3)
        return {row.metric.split(" (")[0]: row for row in model_rows(report)}

    fast = rows(initialize=0.17, ready=2.5)
    assert fast["initialize latency"].verdict == "met"
    assert "a bare pygls server: 870" in fast["initialize latency"].server
    assert fast["time to ready"].verdict == "met"
    slow = rows(initialize=0.9, ready=9.7)
    assert slow["initialize latency"].verdict == "MISSED"
    assert slow["time to ready"].verdict == "MISSED"


def test_time_to_ready_shows_its_fastest_and_slowest_start() -> None:
    server = ServerFigures(
        initialize_seconds=[0.17],
        ready_seconds=[3.2, 3.11, 3.78, 3.16, 3.4],
        first_hover_seconds=[1.2],
        transport_seconds=[0.001],
    )
    report = ModelReport("SmolLM2-135M", server, {}, None, "", None, "", [0.87], 3)
    [row] = [row for row in model_rows(report) if row.metric.startswith("time to ready")]
    assert row.server == "3.20 s (3.11 s to 3.78 s over 5 starts)"
    assert row.verdict == "MISSED"


def test_memory_given_back_by_the_end_of_a_run_is_shown_beside_memory_when_ready() -> None:
    server = ServerFigures(
        initialize_seconds=[0.17],
        ready_seconds=[2.5],
        first_hover_seconds=[1.2],
        transport_seconds=[0.001],
        peak_rss_kib=1456 * 1024,
        ready_rss_kib=905 * 1024,
        closed_rss_kib=913 * 1024,
    )
    report = ModelReport("SmolLM2-135M", server, {}, None, "", None, "", [0.87], 3)
    [row] = [row for row in model_rows(report) if row.metric.startswith("resident memory")]
    assert row.server == "905 MiB / 913 MiB"


def full_answer(seconds: float) -> Completion:
    return Completion(seconds, "x", 1, {"lastTokens": 50})


def rows_of(prompt: PromptFigures, tokens: int) -> list[Row]:
    """The table rows of a server measured on `prompt` only (and one start)."""
    server = ServerFigures(
        initialize_seconds=[0.17],
        ready_seconds=[9.0],
        first_hover_seconds=[1.2],
        transport_seconds=[0.001],
        prompts=[prompt],
    )
    report = ModelReport(
        "SmolLM2-135M", server, {prompt.label: tokens}, None, "", None, "", [0.87], 3
    )
    return model_rows(report)


def test_the_first_completion_asked_at_ready_is_also_timed_from_spawn() -> None:
    prompt = PromptFigures(
        label="~20", first_token=[full_answer(0.05)], warmup=full_answer(1.5), full=[]
    )
    [row] = [row for row in rows_of(prompt, 20) if row.metric.startswith("first completion")]
    assert row.server == "1.50 s (10.50 s from spawn)"  # the start was ready at 9.0 s


def test_answers_with_a_core_taken_are_shown_beside_the_same_answers_idle() -> None:
    prompt = PromptFigures(
        label="~20",
        first_token=[full_answer(0.05)],
        full=[full_answer(2.0), full_answer(2.2), full_answer(2.4)],
        full_with_core_taken=[full_answer(2.6), full_answer(2.5), full_answer(9.0)],
    )
    [row] = [row for row in rows_of(prompt, 20) if "keeps a core busy" in row.metric]
    assert row.server == "2.60 s; 1.18x idle"


def test_answers_asked_while_a_long_prompt_is_read_are_shown_beside_the_same_answers_idle() -> None:
    prompt = PromptFigures(
        label="~1500",
        first_token=[full_answer(0.5)],
        full=[full_answer(8.0)],
        moved_while_reading=[full_answer(3.0), full_answer(2.2), full_answer(9.0)],
        moved_on_idle=[full_answer(2.0), full_answer(2.0), full_answer(1.8)],
    )
    [row] = [row for row in rows_of(prompt, 1500) if "into this prompt" in row.metric]
    assert row.prompt.startswith("~1500")
    assert row.server == "3.00 s; 1.50x the same answer on an idle server (2.00 s)"


def test_answers_after_typing_on_while_a_long_prompt_is_read_are_shown_beside_them_idle() -> None:
    prompt = PromptFigures(
        label="~1500",
        first_token=[full_answer(0.5)],
        full=[full_answer(8.0)],
        typed_while_reading=[full_answer(1.0), full_answer(1.2), full_answer(6.0)],
        typed_on_idle=[full_answer(4.0), full_answer(4.0), full_answer(3.8)],
    )
    [row] = [row for row in rows_of(prompt, 1500) if "after typing" in row.metric]
    assert row.prompt.startswith("~1500")
    assert row.server == "1.20 s; 0.30x the same answer on an idle server (4.00 s)"


def test_answers_after_the_cursor_rested_are_shown_beside_the_cold_answers_and_the_read() -> None:
    prompt = PromptFigures(
        label="~1500",
        first_token=[full_answer(2.5)],
        full=[full_answer(3.0), full_answer(3.4), full_answer(3.2)],
        read_at_cursor=[full_answer(0.7), full_answer(0.8), full_answer(5.0)],
        read_at_cursor_seconds=[2.4, 2.6, 2.5],
    )
    [row] = [row for row in rows_of(prompt, 1500) if "cursor rested" in row.metric]
    assert row.server == "800.0 ms; 0.25x the cold answer; the read itself: 2.50 s"


def decoded(decode_ms: float, passes: int, tokens: int) -> Completion:
    status = {"lastDecodeMs": decode_ms, "lastDecodePasses": passes, "lastTokens": tokens}
    return Completion(decode_ms / 1000 + 0.1, "x", 1, status)


def test_decode_time_is_judged_against_the_memory_floor_beside_its_answers() -> None:
    # 1 GB of weights and 1 MB of keys and values per token in context. Read at 8 GB/s before
    # the answers and 10 GB/s after: the faster read is the floor, so a pass over the ~20-token
    # prompt plus half of its 50 tokens (45 in all) takes at least 104.5 ms.
    slower = MemoryFloor(8e9, 1_000_000_000, 1_000_000)
    faster = MemoryFloor(10e9, 1_000_000_000, 1_000_000)

    def row(per_token_ms: float, floor_target: bool = True) -> Row:
        prompt = PromptFigures(
            label="~20",
            full=[decoded(49 * per_token_ms, 49, 50)] * 3,
            memory_floors=[slower, faster],
        )
        server = ServerFigures([0.17], [9.0], [1.2], transport_seconds=[0.001], prompts=[prompt])
        report = ModelReport(
            "Phi-3", server, {"~20": 20}, None, "", None, "", [0.87], 4, floor_target
        )
        [row] = [row for row in model_rows(report) if "memory floor" in row.metric]
        return row

    within = row(per_token_ms=150)
    assert within.verdict == "met"
    assert (
        "1.44x the floor: 1.04 GB a pass at 10.0 GB/s = 104.5 ms "
        "(read bandwidth beside these answers: 8.0 / 10.0 GB/s)"
    ) in within.server
    # 180 ms a token: 1.72x the faster read's floor, 1.38x the slower's; the lower floor judges.
    assert row(per_token_ms=180).verdict == "MISSED"
    # The issue sets this target for Phi-3-mini-sized decoding only: elsewhere it is a figure.
    reported = row(per_token_ms=300, floor_target=False)
    assert "2.87x the floor" in reported.server
    assert reported.verdict == ""


def test_the_speed_the_server_read_its_weights_after_the_answers_judges_them() -> None:
    # A fresh buffer read at 10 GB/s, the server's own weights at 7, 8 and 9 GB/s right after
    # each answer (slower memory): the passes read the weights, so their floor is 1.04 GB at
    # the median 8 GB/s = 130.6 ms a pass.
    fresh = MemoryFloor(10e9, 1_000_000_000, 1_000_000)

    def row(per_token_ms: float) -> Row:
        prompt = PromptFigures(
            label="~20",
            full=[decoded(49 * per_token_ms, 49, 50)] * 3,
            memory_floors=[fresh, fresh],
            weight_read_speeds=[9e9, 7e9, 8e9],
        )
        server = ServerFigures([0.17], [9.0], [1.2], transport_seconds=[0.001], prompts=[prompt])
        report = ModelReport("Phi-3", server, {"~20": 20}, None, "", None, "", [0.87], 4)
        [row] = [row for row in model_rows(report) if "memory floor" in row.metric]
        return row

    # 180 ms a token: 1.38x the weights' floor (met), though 1.72x the fresh buffer's.
    judged = row(per_token_ms=180)
    assert judged.verdict == "met"
    assert "1.38x the floor: 1.04 GB a pass at 8.0 GB/s = 130.6 ms" in judged.server
    assert "weights read at 9.0 / 7.0 / 8.0 GB/s right after each answer" in judged.server
    assert "a fresh buffer in another process at 10.0 / 10.0 GB/s" in judged.server
    assert "1.72x its floor" in judged.server
    assert row(per_token_ms=200).verdict == "MISSED"


def test_no_floor_row_without_a_floor_measured_beside_the_answers() -> None:
    prompt = PromptFigures(label="~20", full=[decoded(49 * 150, 49, 50)] * 3)
    server = ServerFigures([0.17], [9.0], [1.2], transport_seconds=[0.001], prompts=[prompt])
    report = ModelReport("Phi-3", server, {"~20": 20}, None, "", None, "", [0.87], 4)
    assert not [row for row in model_rows(report) if "memory floor" in row.metric]


def test_the_floor_counts_what_a_decode_pass_reads(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {
        "model.embed_tokens.weight": torch.zeros(100, 8),
        "model.layers.0.mlp.up_proj.weight": torch.zeros(16, 8),
        "lm_head.weight": torch.zeros(100, 8),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    # A pass reads one row of the input embeddings, unless they are the output projection.
    assert fp32_weight_bytes(tmp_path, tied=False) == 4 * (16 * 8 + 100 * 8)
    assert fp32_weight_bytes(tmp_path, tied=True) == 4 * (100 * 8 + 16 * 8 + 100 * 8)
    # A bf16 checkpoint's weights stay bf16 in the server's fp32 format: half the bytes.
    assert fp32_weight_bytes(tmp_path, tied=False, held_in_bf16=True) == 2 * (16 * 8 + 100 * 8)
    config: dict[str, object] = {"num_hidden_layers": 30, "num_attention_heads": 9}
    config |= {"num_key_value_heads": 3, "hidden_size": 576}
    # SmolLM2: keys and values of 3 heads of 64 in 30 layers, fp32.
    assert kv_bytes_per_token(config) == 2 * 30 * 3 * 64 * 4
