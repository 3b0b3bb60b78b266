"""Leaving a load's long steps (a hub download) once a newer load or the server's exit has made
them moot.

A download cannot be interrupted where it waits for the network: it runs on a thread of its
own, the load waits for it through its `LoadStop`, which lets go as soon as it is set, and the
download ends at its next read, where it sees the stop (see `hub_downloads`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")


class LoadStopped(Exception):
    """A load's step was left because its `LoadStop` was set."""


class StopCheck(Protocol):
    """What a step that waits asks whether its load is still wanted (a `LoadStop`, or one that
    also knows of newer loads, see `load_steps`)."""

    def check(self) -> None:
        """Raise `LoadStopped` once the load is no longer wanted."""


class LoadStop:
    """Set when a load is superseded or the server exits; its steps stop waiting then."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._stopped = False
        self._load_ended = False
        self._work: list[Future[Any]] = []

    def set(self) -> None:
        """Stop: whoever waits in `result_of` is let go at once."""
        with self._condition:
            self._stopped = True
            self._condition.notify_all()

    def is_set(self) -> bool:
        """Whether the load was stopped."""
        return self._stopped

    def check(self) -> None:
        """Raise `LoadStopped` once the load was stopped."""
        if self._stopped:
            raise LoadStopped

    def result_of(self, work: Callable[[], _T], *, name: str) -> _T:
        """`work()`, run on a daemon thread called `name`; raises `LoadStopped` as soon as the
        stop is set, leaving the work to end on its own (it should check the stop)."""
        future: Future[_T] = Future()
        with self._condition:
            self.check()
            self._work.append(future)
        future.add_done_callback(self._wake)
        threading.Thread(target=_run_into, args=(future, work), name=name, daemon=True).start()
        with self._condition:
            self._condition.wait_for(lambda: self._stopped or future.done())
        if not future.done():
            raise LoadStopped
        return future.result()

    def load_ended(self) -> None:
        """Its load has left the model thread (or never ran): only work started through
        `result_of` can still see the stop."""
        with self._condition:
            self._load_ended = True

    def in_use(self) -> bool:
        """Whether setting it would still stop something: its load (a conversion sees it
        between two tensors), or work started through `result_of` (a download)."""
        with self._condition:
            return not self._load_ended or not all(future.done() for future in self._work)

    def wait_for_work(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the work started through `result_of` to end (a
        download deletes its partial file as it sees the stop); True if it has."""
        with self._condition:
            return self._condition.wait_for(
                lambda: all(future.done() for future in self._work), timeout
            )

    def _wake(self, _: Future[Any]) -> None:
        with self._condition:
            self._condition.notify_all()


def wait_for_stopped_work(stops: Iterable[LoadStop], timeout: float) -> bool:
    """Set every stop, then wait up to `timeout` seconds in all for their work to end; True if
    it has."""
    stops = list(stops)
    for stop in stops:
        stop.set()
    deadline = time.monotonic() + timeout
    return all(stop.wait_for_work(max(0.0, deadline - time.monotonic())) for stop in stops)


def _run_into(future: Future[_T], work: Callable[[], _T]) -> None:
    try:
        result = work()
    except BaseException as error:
        future.set_exception(error)
    else:
        future.set_result(result)
