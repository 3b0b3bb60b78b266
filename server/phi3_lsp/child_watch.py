"""Ending the processes the server starts when the server dies, however it dies.

An editor that kills a hung server, or the OOM killer, sends SIGKILL: the server runs no more
code, and what it started (pip fetching the offline model for minutes, the 4-bit layers'
process, the C compiler) would run on. So each child gets a watcher: a shell that waits on a
pipe whose write end only the server holds. The kernel closes that end when the server's
process ends, by any means; the watcher then kills the child, or its whole process group
where it leads one (pip's own processes). A child that ended first is let go with a line on
the pipe, so that its reused pid is never killed.

Not prctl(PR_SET_PDEATHSIG) in a `preexec_fn`: that signal follows the *thread* that started
the child, not the process; Python run between fork and exec can deadlock in a threaded server,
and turns off vfork, so each start copies the page tables of the model (0.27 s with 4 GB
resident, against 4 ms, the watcher's start); and it reaches the child only, not what pip
starts. A pipe belongs to the process, needs no code in the child, and works on macOS too.
Elsewhere (Windows) children are not watched.

A child that is given up on while the server lives (stopped, timed out, Ctrl-C) is killed at
once with `kill`; one that starts processes of its own (pip, a compiler wrapper such as ccache)
is started as the leader of a process group (`OWN_GROUPS`), so that they go with it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

log = logging.getLogger(__name__)

# `read` fails at the end of the pipe without a line: the server is gone.
_WATCHER = 'read -r released || kill -s KILL -- "$1"'

OWN_GROUPS = hasattr(os, "killpg")
"""Whether a child can lead a process group of its own (`start_new_session`), killed whole."""


class ChildWatch:
    """A watcher that kills `process` (with its process group if `with_its_group`: it must have
    been started as the leader of one) once the server's process has ended. `release` it when
    the process has ended."""

    def __init__(self, process: subprocess.Popen[Any], *, with_its_group: bool = False) -> None:
        self._watcher: subprocess.Popen[bytes] | None = None
        if os.name != "posix":
            return
        target = f"-{process.pid}" if with_its_group else str(process.pid)
        try:
            self._watcher = subprocess.Popen(
                ["/bin/sh", "-c", _WATCHER, "phi3-lsp-child-watch", target],
                stdin=subprocess.PIPE,
                bufsize=0,  # the line goes at once, and closing writes nothing more
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Out of the terminal's reach: a Ctrl-C or hang-up must not end it first.
                start_new_session=True,
            )
        except OSError as error:  # e.g. no processes left to start: the child runs unwatched
            log.warning("Process %d will not end with the server: %s", process.pid, error)

    def release(self) -> None:
        """Let the process go (it has ended, or its pid could be another's): the watcher ends
        without killing."""
        watcher, self._watcher = self._watcher, None
        if watcher is None or watcher.stdin is None:
            return
        with suppress(BrokenPipeError):  # killed by someone: nothing to tell it
            watcher.stdin.write(b"\n")
        watcher.stdin.close()
        watcher.wait()


@contextmanager
def watched(process: subprocess.Popen[Any], *, with_its_group: bool = False) -> Iterator[None]:
    """`process` ends with the server while in this block; leave it once the process has
    ended."""
    watch = ChildWatch(process, with_its_group=with_its_group)
    try:
        yield
    finally:
        watch.release()


def kill(process: subprocess.Popen[Any], *, with_its_group: bool = False) -> None:
    """Kill `process` now (with its process group if `with_its_group`: it must have been started
    as the leader of one) and wait for its end, reading what is left of its pipes."""
    if with_its_group:
        # Gone already, or only zombies left in its group (macOS refuses those).
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    process.kill()
    process.communicate()
