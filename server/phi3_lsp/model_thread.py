"""The model thread: the one thread that the model's work (every torch call) runs on, in order;
also the threads of work beside it that the exit must not wait for (the imports of a load, the
architecture before the weights)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

from phi3_lsp.scheduling import lower_current_thread_priority

_P = ParamSpec("_P")
_T = TypeVar("_T")


class ModelThread(Executor):
    """A single daemon thread that runs its jobs in order (the model thread's: every torch call).

    A daemon thread, unlike a ThreadPoolExecutor worker, does not hold the process open at
    exit while a load that cannot be interrupted (e.g. dequantizing a GGUF) is still running.
    It runs at a lower priority than the server's other threads (see `scheduling`). Once no
    job has come for `idle_after` seconds since the last one ended, it calls `when_idle`.
    """

    def __init__(
        self,
        name: str = "phi3-model",
        when_idle: Callable[[], None] = lambda: None,
        idle_after: float = 0.0,
    ) -> None:
        self._when_idle = when_idle
        self._idle_after = idle_after
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Queue `fn(*args, **kwargs)`; the returned future holds its result."""
        if self._closed:
            raise RuntimeError("the model thread has shut down")
        future: Future[_T] = Future()
        self._jobs.put((future, lambda: fn(*args, **kwargs)))
        return future

    @property
    def closed(self) -> bool:
        """True once `shutdown` was called."""
        return self._closed

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking jobs; the running job finishes on its own."""
        self._closed = True
        self._jobs.put(None)
        if wait:
            self._thread.join()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the thread to end; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        lower_current_thread_priority()
        idle_work_due = False
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_after if idle_work_due else None)
            except queue.Empty:
                idle_work_due = False
                self._when_idle()
                continue
            if job is None:
                return
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            idle_work_due = True
            try:
                future.set_result(call())
            except BaseException as error:
                future.set_exception(error)
