"""How a hub download's progress bars stop it: the bars huggingface_hub's snapshot download
updates from its workers (HTTP) and from hf_xet's own threads (Xet storage)."""

from __future__ import annotations

import _thread
import threading
import time
from typing import Any

import pytest

from phi3_lsp.hub_downloads import _progress_bar
from phi3_lsp.load_stops import LoadStop, LoadStopped
from phi3_lsp.progress import ProgressUpdate


def snapshot_bar(stop: LoadStop, reports: list[ProgressUpdate]) -> Any:
    """A bar as huggingface_hub's snapshot download makes it: bytes, its total growing as
    each file starts."""
    return _progress_bar(reports.append, "Downloading the weights", stop, None)(total=0, unit="B")


def file_starts(bar: Any, size: int) -> None:
    """What huggingface_hub does as a file starts: adds its size to the total, and redraws."""
    bar.total += size
    bar.refresh()


def test_no_file_of_a_stopped_download_starts() -> None:
    # A file whose worker was still asking for its metadata when the download was stopped
    # would start in the Xet session made anew, and run to its end.
    stop, reports = LoadStop(), list[ProgressUpdate]()
    bar = snapshot_bar(stop, reports)
    file_starts(bar, 1000)
    bar.update(500)
    stop.set()
    with pytest.raises(LoadStopped):
        file_starts(bar, 1000)
    assert [report.fraction for report in reports] == [0.5]


def test_hf_xet_threads_are_not_interrupted_by_a_stop() -> None:
    # They print the error to the server's log and go on: the Xet session's abort stops them.
    stop, reports = LoadStop(), list[ProgressUpdate]()
    bar = snapshot_bar(stop, reports)
    file_starts(bar, 1000)
    stop.set()
    raised: list[BaseException] = []
    done = threading.Event()

    def as_hf_xet_does() -> None:  # on a thread that Python did not start
        try:
            bar.update(100)
            bar.refresh()
        except BaseException as error:
            raised.append(error)
        finally:
            done.set()

    _thread.start_new_thread(as_hf_xet_does, ())
    assert done.wait(10)
    assert raised == []


def test_tqdms_monitor_thread_redraws_a_stopped_downloads_bar_without_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # tqdm's monitor thread redraws every bar now and then: the stop is not its to raise.
    from tqdm._monitor import TMonitor

    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda hook: errors.append(hook.exc_value))
    stop = LoadStop()
    bar = snapshot_bar(stop, [])
    file_starts(bar, 1000)
    stop.set()
    bar.miniters, bar.maxinterval = 2, 0  # due for a redraw at once
    monitor = TMonitor(type(bar), 0.01)
    try:
        deadline = time.monotonic() + 10
        while bar.miniters != 1 and time.monotonic() < deadline:  # the monitor's redraw
            time.sleep(0.01)
    finally:
        monitor.exit()
    assert bar.miniters == 1, "the monitor did not redraw the bar"
    assert errors == []


def test_a_download_larger_than_listed_shows_100_percent_only_once_it_has_ended() -> None:
    # The repo changed between its listing and its download: more bytes come than were listed.
    reports = list[ProgressUpdate]()
    bars = _progress_bar(reports.append, "Downloading the weights", None, 1000)
    bar = bars(total=0, unit="B")
    file_starts(bar, 1000)
    bar.update(1000)
    file_starts(bar, 1000)
    bar.update(500)
    assert [report.fraction for report in reports] == [0.99]
    bars.finished()
    assert [report.fraction for report in reports] == [0.99, 1.0]
