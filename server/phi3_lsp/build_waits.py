"""A load that finds another phi3-lsp process building the cache entry it needs (two editor
windows opened at once, the CLI beside a server): it says so, and waits only as long as the
load is wanted (a switch to another model, or the server's exit, stops it)."""

from __future__ import annotations

from collections.abc import Callable

from phi3_lsp.load_stops import StopCheck
from phi3_lsp.progress import ProgressCallback, ProgressUpdate


def waiting_for_another_process(
    report: ProgressCallback, stop: StopCheck | None, update: ProgressUpdate
) -> Callable[[], None]:
    """A `waiting` for `build_once`: reports `update` once, and raises `LoadStopped` once
    `stop` says the load is no longer wanted."""
    said = False

    def waiting() -> None:
        nonlocal said
        if not said:
            said = True
            report(update)
        if stop is not None:
            stop.check()

    return waiting
