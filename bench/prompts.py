"""Prompts and documents cut from real Python source read at run time (the interpreter's stdlib).

Every repeat gets its own window of source, starting at a different `def`/`class` line, so that
neither the server's suggestion cache nor any prompt-prefix KV reuse can serve a repeat from an
earlier one: each timed request pays its full prefill, as a request on a fresh file would.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

TokenCounter = Callable[[str], int]

# Files of the stdlib that are long, ordinary Python: real code, comments and docstrings.
DEFAULT_SOURCE = "argparse.py"
LONG_DOCUMENT_SOURCES = ("argparse.py", "typing.py", "inspect.py", "pathlib.py", "dataclasses.py")


@dataclass(frozen=True)
class PromptSet:
    """Distinct windows of source of about the same number of tokens, named by it ("~500")."""

    label: str
    windows: tuple[str, ...]


def stdlib_file(name: str) -> Path:
    """A module file of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"]) / name


def read_source_lines(path: Path) -> list[str]:
    """The file's lines, each with its line ending."""
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def cut_to_tokens(
    lines: Sequence[str], start: int, target_tokens: int, count_tokens: TokenCounter
) -> str:
    """Whole lines from `start` on, as many as fit in `target_tokens` (at least one line)."""
    if not 0 <= start < len(lines):
        raise ValueError(f"start line {start} is outside the {len(lines)}-line source")
    text = lines[start]
    for line in lines[start + 1 :]:
        candidate = text + line
        if count_tokens(candidate) > target_tokens:
            break
        text = candidate
    return text


def definition_starts(lines: Sequence[str]) -> list[int]:
    """Indices of lines that open a function or class, each with text seen for the first time."""
    seen: set[str] = set()
    starts = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("def ", "class ")) and stripped not in seen:
            seen.add(stripped)
            starts.append(index)
    return starts


def prompt_windows(
    lines: Sequence[str],
    target_tokens: int,
    count: int,
    count_tokens: TokenCounter,
    spread: int | None = None,
) -> tuple[str, ...]:
    """`count` distinct windows of half to all of `target_tokens` tokens, starting at definitions
    spread over the whole source (a start too near the end for a full window is passed over).

    The starts are spread for `spread` windows (default `count`): asked for fewer, the same
    spread gives the first of the same windows.
    """
    starts = definition_starts(lines)
    step = max(1, len(starts) // (spread or count))
    # Evenly spread starts first, then the ones in between, until enough windows fit.
    ordered = [start for offset in range(step) for start in starts[offset::step]]
    windows: list[str] = []
    for start in ordered:
        window = cut_to_tokens(lines, start, target_tokens, count_tokens)
        if target_tokens / 2 <= count_tokens(window) <= target_tokens:
            windows.append(window)
            if len(windows) == count:
                return tuple(windows)
    raise ValueError(f"the source has room for {len(windows)} windows, {count} were asked")


def long_document(min_lines: int) -> str:
    """Real stdlib modules, concatenated until the text has `min_lines` lines (then cut there)."""
    lines: list[str] = []
    while len(lines) < min_lines:
        for name in LONG_DOCUMENT_SOURCES:
            lines.extend(read_source_lines(stdlib_file(name)))
    return "".join(lines[:min_lines])
