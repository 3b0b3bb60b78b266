"""Progress reports from long model work (fetch, convert, load), free of any LSP type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Stage = Literal["fetching", "converting", "loading"]


@dataclass(frozen=True)
class ProgressUpdate:
    """One step of a long operation; `fraction` is 0.0 to 1.0 when known."""

    stage: Stage
    message: str
    fraction: float | None = None


ProgressCallback = Callable[[ProgressUpdate], None]


def ignore_progress(update: ProgressUpdate) -> None:
    """The default callback: progress goes nowhere."""
