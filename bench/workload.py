"""What a baseline process is asked to run, and what it reports back, as JSON files.

Baselines run in their own processes so that their memory never shows in the server's peak RSS
and their threads never compete with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PromptWork:
    """One prompt size: an untimed warm-up window, windows timed for the first token, and other
    windows timed for a full answer (each window is used once)."""

    label: str
    warmup: list[str]
    first_token: list[str]
    full: list[str]
    # Server only: answers under its default answer budget (it answers early, goes on behind).
    first_answer: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Workload:
    max_new_tokens: int
    prompts: list[PromptWork]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Workload:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            max_new_tokens=data["max_new_tokens"],
            prompts=[PromptWork(**prompt) for prompt in data["prompts"]],
        )


@dataclass
class PromptTimings:
    """Seconds per request, in window order, plus token counts of each request."""

    label: str
    first_token_seconds: list[float] = field(default_factory=list)
    full_seconds: list[float] = field(default_factory=list)
    full_new_tokens: list[int] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    full_decode_seconds: list[float | None] = field(default_factory=list)
    """Per full answer: the time from its first new token to its last (None: not measured)."""


@dataclass
class BaselineResult:
    load_seconds: float
    prompts: list[PromptTimings]
    peak_rss_kib: int | None = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> BaselineResult:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        data["prompts"] = [PromptTimings(**prompt) for prompt in data["prompts"]]
        return cls(**data)


@dataclass(frozen=True)
class Answer:
    """How a baseline answered one request."""

    seconds: float
    prompt_tokens: int
    new_tokens: int
    decode_seconds: float | None
    """From the first new token to the last, timed within the same request."""


Generate = Callable[[str, int], Answer]
"""A baseline's answer to (prompt text, new tokens)."""


def time_workload(workload: Workload, generate: Generate) -> list[PromptTimings]:
    """Run every prompt of `workload` through `generate`, the same way for every baseline."""
    timings = []
    for prompt in workload.prompts:
        timing = PromptTimings(label=prompt.label)
        # Untimed: the first call at a new prompt size pays one-time costs (allocator growth).
        for text in prompt.warmup:
            generate(text, workload.max_new_tokens)
        for text in prompt.first_token:
            timing.first_token_seconds.append(generate(text, 1).seconds)
        for text in prompt.full:
            answer = generate(text, workload.max_new_tokens)
            timing.full_seconds.append(answer.seconds)
            timing.prompt_tokens.append(answer.prompt_tokens)
            timing.full_new_tokens.append(answer.new_tokens)
            timing.full_decode_seconds.append(answer.decode_seconds)
        timings.append(timing)
    return timings


def peak_rss_kib(pid: int | str = "self") -> int | None:
    """VmHWM (peak resident set size, KiB) of a live process, from /proc."""
    return _status_kib(pid, "VmHWM")


def rss_kib(pid: int | str = "self") -> int | None:
    """VmRSS (resident set size now, KiB) of a live process, from /proc."""
    return _status_kib(pid, "VmRSS")


def _status_kib(pid: int | str, name: str) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return None


class BaselineFailed(RuntimeError):
    """A baseline process exited with an error; the message carries the end of its log."""


def run_baseline_process(
    module: str,
    workload: Workload,
    work_dir: Path,
    extra_args: list[str],
    env: dict[str, str] | None = None,
) -> BaselineResult:
    """Run `python -m <module> --workload W --result R ...` and read its result file."""
    name = module.rsplit(".", 1)[-1]
    workload_path = work_dir / f"{name}-workload.json"
    result_path = work_dir / f"{name}-result.json"
    log_path = work_dir / f"{name}.log"
    workload.save(workload_path)
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", module, "--workload", str(workload_path)]
    command += ["--result", str(result_path), *extra_args]
    with log_path.open("w", encoding="utf-8") as log:
        completed = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    if completed.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise BaselineFailed(
            f"{module} exited with {completed.returncode}; log {log_path}:\n{tail}"
        )
    return BaselineResult.load(result_path)
