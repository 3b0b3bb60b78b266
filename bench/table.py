"""The benchmark's one output: a markdown table, each figure beside its same-run baselines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NOT_RUN = "not run"
NOT_APPLICABLE = "n/a"

HEADERS = (
    "metric",
    "model",
    "prompt",
    "phi3-lsp (server over LSP)",
    "seed: transformers pipeline",
    "llama.cpp",
    "target",
    "met?",
)


@dataclass(frozen=True)
class Row:
    """One line of the results table; every cell is already formatted text."""

    metric: str
    model: str
    prompt: str
    server: str
    seed: str = NOT_APPLICABLE
    llama_cpp: str = NOT_APPLICABLE
    target: str = ""
    verdict: str = ""

    def cells(self) -> tuple[str, ...]:
        return (
            self.metric,
            self.model,
            self.prompt,
            self.server,
            self.seed,
            self.llama_cpp,
            self.target,
            self.verdict,
        )


def format_duration(seconds: float | None) -> str:
    """Milliseconds below one second (two decimals below 10 ms), seconds above."""
    if seconds is None:
        return NOT_RUN
    if seconds < 0.010:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def format_rate(tokens_per_second: float | None) -> str:
    """Tokens per second: three significant figures, whole numbers from 100 on."""
    if tokens_per_second is None:
        return NOT_RUN
    if tokens_per_second >= 100:
        return f"{tokens_per_second:,.0f} tok/s"
    return f"{tokens_per_second:.3g} tok/s"


def format_kib(kib: int | None) -> str:
    """A /proc size (KiB) in MiB."""
    if kib is None:
        return NOT_RUN
    return f"{kib / 1024:,.0f} MiB"


def verdict(met: bool | None) -> str:
    """The `met?` cell: empty when the figure has no target or was not measured."""
    if met is None:
        return ""
    return "met" if met else "MISSED"


def _escape(cell: str) -> str:
    # A bare pipe would end the cell early in every markdown renderer.
    return cell.replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: Sequence[Row]) -> str:
    """A GitHub-flavoured markdown table, padded so it also reads well in a terminal."""
    table = [HEADERS, *(tuple(_escape(cell) for cell in row.cells()) for row in rows)]
    widths = [max(len(line[column]) for line in table) for column in range(len(HEADERS))]

    def line(cells: Sequence[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(table[0]), separator, *(line(cells) for cells in table[1:])]) + "\n"
