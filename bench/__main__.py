"""`python -m bench`: the server over LSP beside same-run baselines, as one markdown table.

Options: --repeats N (default 5), --quick (a smoke run), --phi3 (Phi-3-mini-sized runs, long),
--llama-cpp (the llama.cpp baseline; needs its wheel, built once), --weights (the server's
weight formats, default fp32,int4). Results are printed and written to bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Final

from tokenizers import Tokenizer

from bench import agreement, llama_cpp_setup
from bench.lsp_session import ServerSession
from bench.memory_floor import MemoryFloor
from bench.phi3_random import ensure_random_phi3
from bench.prompts import (
    DEFAULT_SOURCE,
    PromptSet,
    long_document,
    prompt_windows,
    read_source_lines,
    stdlib_file,
)
from bench.report import ModelReport, model_rows
from bench.server_runs import ServerPlan, run_server
from bench.stats import median
from bench.table import NOT_APPLICABLE, NOT_RUN, Row, render_markdown, verdict
from bench.workload import (
    BaselineFailed,
    BaselineResult,
    PromptWork,
    Workload,
    run_baseline_process,
)
from phi3_lsp.settings import WEIGHT_FORMATS

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "latest.md"
MAX_NEW_TOKENS = 50
CONTEXT_TOKENS = 2048  # room for the ~1,500-token prompts (the server's default budget is 1,024)
LONG_DOCUMENT_LINES = 10_000
MIN_STARTUPS = 5
"""Server starts timed for the time to ready, at least: a single start of the Phi-3-mini-sized
model took 7.38 s in a run where six starts of the same code had taken 4.24-5.23 s half an hour
before, and three starts of one build took 2.86-3.10 s in a run and 2.54-3.20 s in eight more."""
SMOLLM2: Final = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Options:
    repeats: int
    quick: bool
    phi3: bool
    llama_cpp: bool
    weights: tuple[str, ...] = WEIGHT_FORMATS


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed requests per figure")
    parser.add_argument("--quick", action="store_true", help="2 prompt sizes, 2 repeats")
    parser.add_argument("--phi3", action="store_true", help="add Phi-3-mini-sized runs (long)")
    parser.add_argument("--llama-cpp", action="store_true", help="add the llama.cpp baseline")
    parser.add_argument(
        "--weights",
        default=",".join(WEIGHT_FORMATS),
        help="the server's weight formats, comma-separated (default: fp32,int4)",
    )
    args = parser.parse_args(argv)
    repeats = min(args.repeats, 2) if args.quick else args.repeats
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    weights = tuple(dict.fromkeys(part.strip() for part in args.weights.split(",")))
    if not weights or any(part not in WEIGHT_FORMATS for part in weights):
        parser.error(f"--weights takes formats out of {', '.join(WEIGHT_FORMATS)}")
    return Options(repeats, args.quick, args.phi3, args.llama_cpp, weights)


def say(message: str) -> None:
    """Progress goes to stderr: stdout carries only the table."""
    print(message, file=sys.stderr, flush=True)


WINDOW_SPREAD = 16
"""Prompt windows are spread as for a full run (1 + 3 x 5 repeats): a quick run, asking for fewer,
times the first of the same windows, so its rows compare with a full run's."""


def prompt_sets(tokenizer_file: Path, sizes: list[int], windows: int) -> list[PromptSet]:
    tokenizer = Tokenizer.from_file(str(tokenizer_file))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    lines = read_source_lines(stdlib_file(DEFAULT_SOURCE))
    return [
        PromptSet(f"~{size:,}", prompt_windows(lines, size, windows, count, WINDOW_SPREAD))
        for size in sizes
    ]


def prompt_work(sets: list[PromptSet], repeats: int, warm_every_size: bool) -> list[PromptWork]:
    """Window 0 warms up (at the first size only, unless `warm_every_size`); then `repeats`
    windows each time the first token, a full answer, and the server's early first answer."""
    return [
        PromptWork(
            label=prompt.label,
            warmup=list(prompt.windows[:1]) if warm_every_size or index == 0 else [],
            first_token=list(prompt.windows[1 : 1 + repeats]),
            full=list(prompt.windows[1 + repeats : 1 + 2 * repeats]),
            first_answer=list(prompt.windows[1 + 2 * repeats : 1 + 3 * repeats]),
        )
        for index, prompt in enumerate(sets)
    ]


def median_prompt_tokens(tokenizer_file: Path, work: list[PromptWork]) -> dict[str, float]:
    """Prompt lengths as the model sees them (with its special tokens, e.g. BOS)."""
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    return {
        prompt.label: median(
            [len(tokenizer.encode(text).ids) for text in prompt.first_token + prompt.full]
        )
        for prompt in work
    }


async def bare_initialize_seconds(times: int, log_dir: Path) -> list[float]:
    seconds = []
    for _ in range(times):
        session = await ServerSession.start(
            [sys.executable, "-m", "bench.bare_server"], {}, log_dir / "bare.stderr"
        )
        seconds.append(session.initialize_seconds)
        await session.shutdown()
    return seconds


def run_seed(model_dir: Path, work: list[PromptWork], log_dir: Path) -> BaselineResult | str:
    say(f"seed baseline (transformers pipeline) on {model_dir}")
    try:
        return run_baseline_process(
            "bench.seed_baseline",
            Workload(MAX_NEW_TOKENS, work),
            log_dir,
            ["--model-dir", str(model_dir)],
            env=_child_env(),
        )
    except BaselineFailed as error:
        say(str(error))
        return "failed (see log)"


def run_llama_cpp(
    cache: Path, gguf: Path, work: list[PromptWork], log_dir: Path
) -> BaselineResult | str:
    wheels = llama_cpp_setup.find_wheels(cache)
    if wheels is None:
        say(
            f"llama.cpp baseline skipped: no llama-cpp-python and diskcache wheels in "
            f"{llama_cpp_setup.wheel_dir(cache)}; build them once with: "
            f"{llama_cpp_setup.build_command(cache)}"
        )
        return "no wheel"
    site = llama_cpp_setup.ensure_site(cache, wheels)
    say(f"llama.cpp baseline ({wheels[0].name}) on {gguf.name}")
    try:
        return run_baseline_process(
            "bench.llama_cpp_baseline",
            Workload(MAX_NEW_TOKENS, work),
            log_dir,
            ["--gguf", str(gguf), "--threads", "2"],
            env=_child_env(extra_path=site),
        )
    except BaselineFailed as error:
        say(str(error))
        return "failed (see log)"


def _child_env(extra_path: Path | None = None) -> dict[str, str]:
    paths = [str(REPO_ROOT)] + ([str(extra_path)] if extra_path else [])
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join(paths + ([existing] if existing else []))}


def _split(result: BaselineResult | str) -> tuple[BaselineResult | None, str]:
    return (result, NOT_RUN) if isinstance(result, BaselineResult) else (None, result)


@dataclass(frozen=True)
class ModelSetup:
    """One model as the server, the seed pipeline and llama.cpp each load it."""

    name: str
    server_spec: str
    tokenizer_file: Path
    seed_dir: Path
    gguf: Path | None
    sizes: list[int]
    seed_sizes: list[int]
    repeats: int
    seed_repeats: int
    hovers: int
    warm_every_size: bool  # an untimed full answer before each prompt size, not only the first
    seed_warmup: bool
    speedup_target: float  # how much faster than the seed pipeline a full answer should be
    floor_target: bool  # whether decoding is judged against the memory floor (Phi-3-sized only)
    real_weights: bool  # int4's agreement with fp32 only means something with trained weights


async def bench_model(
    setup: ModelSetup, options: Options, cache: Path, log_dir: Path, bare: list[float]
) -> list[Row]:
    """Server figures for one model in each weight format, then its baselines and, for int4,
    its agreement with fp32; each in its own process."""
    sets = prompt_sets(setup.tokenizer_file, setup.sizes, 1 + 3 * setup.repeats)
    work = prompt_work(sets, setup.repeats, setup.warm_every_size)
    document = long_document(LONG_DOCUMENT_LINES)
    servers = {}
    for weights in options.weights:
        say(f"{setup.name}: server over LSP ({setup.server_spec}, {weights} weights)")
        format_logs = log_dir / f"{setup.name.split()[0]}-{weights}"
        format_logs.mkdir(parents=True, exist_ok=True)
        plan = ServerPlan(
            model=setup.server_spec,
            startups=max(setup.repeats, MIN_STARTUPS),
            prompts=work,
            max_new_tokens=MAX_NEW_TOKENS,
            context_tokens=CONTEXT_TOKENS,
            long_document=document,
            hovers=setup.hovers,
            log_dir=format_logs,
            weights=weights,
            # Random weights' next token is noise that a 4-bit copy cannot predict.
            int4_drafts=setup.real_weights,
            measure_floor=functools.partial(memory_floor, setup.seed_dir, weights, log_dir),
        )
        servers[weights] = await run_server(plan, say)

    seed_work = [
        PromptWork(
            w.label,
            w.warmup if setup.seed_warmup else [],
            w.first_token[: setup.seed_repeats],
            w.full[: setup.seed_repeats],
        )
        for w, size in zip(work, setup.sizes, strict=True)
        if size in setup.seed_sizes
    ]
    seed, seed_missing = _split(run_seed(setup.seed_dir, seed_work, log_dir))
    llama_result: BaselineResult | str = NOT_APPLICABLE
    if setup.gguf is None:
        llama_result = "no GGUF of this model"
    elif options.llama_cpp:
        llama_result = run_llama_cpp(cache, setup.gguf, work, log_dir)
    else:
        llama_result = "not run (--llama-cpp)"
    llama, llama_missing = _split(llama_result)
    prompt_tokens = median_prompt_tokens(setup.tokenizer_file, work)
    rows = []
    for weights, server in servers.items():
        rows += model_rows(
            ModelReport(
                model=f"{setup.name}, {weights}",
                server=server,
                prompt_tokens=prompt_tokens,
                seed=seed,
                seed_missing=seed_missing,
                llama_cpp=llama,
                llama_cpp_missing=llama_missing,
                bare_initialize_seconds=bare,
                speedup_target=setup.speedup_target,
                floor_target=setup.floor_target,
            )
        )
    if "int4" in options.weights:
        rows.append(agreement_row(setup, log_dir))
    return rows


def memory_floor(weights_dir: Path, weights: str, log_dir: Path) -> MemoryFloor | None:
    """The decode pass's memory floor, measured in a process of its own while the server idles."""
    say(f"  memory floor: read bandwidth now, bytes of {weights_dir.name} in {weights}")
    command = [sys.executable, "-m", "bench.memory_floor", "--weights-dir", str(weights_dir)]
    with (log_dir / "memory_floor.stderr").open("a") as stderr:
        completed = subprocess.run(
            [*command, "--weights", weights],
            env={**os.environ, **_child_env()},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            check=False,
        )
    if completed.returncode != 0:
        say("memory floor: failed (see memory_floor.stderr)")
        return None
    return MemoryFloor(**json.loads(completed.stdout))


def agreement_row(setup: ModelSetup, log_dir: Path) -> Row:
    """int4's greedy text against fp32's on the reference prompts (trained weights only)."""
    metric = "int4 greedy text vs fp32 (50 tokens, reference prompts)"
    if not setup.real_weights:
        return Row(metric, setup.name, "", "n/a: random weights have no text to keep")
    say(f"{setup.name}: int4 agreement with fp32 on the reference prompts")
    out = log_dir / f"agreement-{setup.name.split()[0]}.json"
    command = [sys.executable, "-m", "bench.agreement", "--model", setup.server_spec]
    with (log_dir / "agreement.stderr").open("w") as stderr:
        completed = subprocess.run(
            [*command, "--out", str(out)],
            env={**os.environ, **_child_env()},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            check=False,
        )
    if completed.returncode != 0:
        return Row(metric, setup.name, "", "failed (see agreement.stderr)")
    results = agreement.load(out)
    return Row(
        metric,
        setup.name,
        f"{len(results)} prompts",
        agreement.summarize(results),
        target="identical greedy text",
        verdict=verdict(all(result.identical for result in results)),
    )


def smollm2_setup(options: Options) -> ModelSetup:
    from phi3_lsp.offline_pack import ensure_asset

    pack = ensure_asset(SMOLLM2)
    sizes = [20, 500] if options.quick else [20, 500, 1500]
    return ModelSetup(
        name="SmolLM2-135M",
        server_spec=SMOLLM2,
        tokenizer_file=pack / "tokenizer.json",
        seed_dir=pack,
        gguf=pack / SMOLLM2_GGUF,
        sizes=sizes,
        seed_sizes=sizes,
        repeats=options.repeats,
        seed_repeats=options.repeats,
        hovers=50 if options.quick else 200,
        warm_every_size=True,
        seed_warmup=True,
        speedup_target=3.0,
        floor_target=False,
        real_weights=True,
    )


def phi3_setup(options: Options, cache: Path) -> ModelSetup:
    say("Phi-3-mini with random weights: building it once if needed (~15 GB in memory)")
    folder = ensure_random_phi3(cache)
    return ModelSetup(
        name="Phi-3-mini (random weights)",
        server_spec=str(folder),
        tokenizer_file=folder / "tokenizer.json",
        seed_dir=folder,
        gguf=None,
        sizes=[20] if options.quick else [20, 500, 1500],
        # bf16 crawls on this CPU (no native bf16): the seed pipeline runs the short prompt once.
        seed_sizes=[20],
        repeats=1,
        seed_repeats=1,
        # As many as for SmolLM2: of 50, the p99 is all but the largest sample, which one
        # stall of the host sets. A few hundred hovers take a second or two.
        hovers=50 if options.quick else 200,
        # A Phi-3-sized full answer takes minutes: one warm-up (the cold first answer) is enough,
        # and none for the bf16 pipeline, whose single answers are what it is measured on.
        warm_every_size=False,
        seed_warmup=False,
        speedup_target=4.0,
        floor_target=True,
        real_weights=False,
    )


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (the machine's kind matters for every figure)."""
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def header(options: Options, argv: list[str]) -> str:
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("torch", "transformers", "pygls")
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    command = shlex.join(["python", "-m", "bench", *argv])
    # Other work on the machine shows in every figure: say how busy it was at the start.
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"# phi3-lsp benchmark, {datetime.datetime.now().isoformat(timespec='minutes')}\n\n"
        f"`{command}` — {os.cpu_count()} CPUs, {memory_kib / 1024 / 1024:.0f} GiB, "
        f"{cpu_model()}; {versions}; medians of {options.repeats} "
        f"(Phi-3: 1; time to ready: of at least {MIN_STARTUPS} starts); load average at start "
        f"{load}.\n"
    )


NOTES = """
How to read it: every server figure is a client round trip over loopback stdio (the line
"loopback round trip" is that overhead alone). Each timed request uses its own window of real
source (the stdlib's argparse.py, cut at a line end), so no cache can answer it. "first token" is
an answer with maxNewTokens 1; prefill speed = prompt tokens / that time; decode speed = the
tokens after the first over the time from the first to the last, timed inside each full answer
(the server's `lastDecodeMs`; a streamer for the seed; streamed chunks for llama.cpp), with the
server's decode passes beside it (a pass checks drafted tokens and can keep several: int4's,
and fp32's where phi3-lsp's own kernels run; fp32's drafts come from the model's 4-bit copy,
`phi3.int4Drafts`, loaded after ready, so its "decode time per token" can be under the floor
of one fp32 pass).
"after a 1-char edit" compares each answer with the decode time of its own run, as the server
reports it (`lastDecodeMs`); the edits of a text longer than the prompt budget (the first 400
lines of the 10,000-line file, a 512-token budget) must each stay within the target, since a
prompt cut that moved would compute the whole prompt again.
Phi-3-mini-sized rows use random weights: their text never repeats and a 4-bit copy cannot
predict it, so nothing is drafted there (`phi3.int4Drafts` off). The seed pipeline and llama.cpp
run in their own processes, greedy, with EOS suppressed so that every answer has 50 tokens; the
server stops at EOS or its own stop rules (token counts in brackets). llama.cpp runs the
original Q4_1 GGUF, the seed pipeline its fp32 conversion, and the server that conversion in its
"fp32" rows and 4-bit layers made from it in its "int4" rows (`phi3.weights`). "load" is the
baseline's in-process load time (no interpreter start); the server's time to ready includes
starting Python.
"""


async def run(options: Options, argv: list[str]) -> str:
    from phi3_lsp.paths import cache_dir

    cache = cache_dir()
    log_dir = cache / "bench" / "runs" / time.strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    say(f"logs in {log_dir}")
    top = header(options, argv)
    bare = await bare_initialize_seconds(options.repeats, log_dir)
    rows = await bench_model(smollm2_setup(options), options, cache, log_dir, bare)
    if options.phi3:
        # The SmolLM2 table is kept even if the long Phi-3 part fails or is stopped.
        write_results(top + "\n" + render_markdown(rows) + NOTES)
        try:
            rows += await bench_model(phi3_setup(options, cache), options, cache, log_dir, bare)
        except Exception as error:
            say(f"Phi-3 runs failed: {error!r}")
            rows.append(Row("Phi-3 runs", "Phi-3-mini (random weights)", "", f"failed: {error}"))
    return top + "\n" + render_markdown(rows) + NOTES


def write_results(markdown: str) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(markdown, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    options = parse_options(arguments)
    markdown = asyncio.run(run(options, arguments))
    write_results(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
