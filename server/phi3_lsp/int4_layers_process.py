"""Making a model's 4-bit layers in another process, at the lowest CPU priority.

Quantizing Phi-3-mini takes 35-50 s; on the model thread that would hold up every
completion, and on another thread of the server it would hold the GIL (and transformers sets
torch's default dtype while it builds a model, which a running completion would see). So the
server runs `phi3-lsp quantize` beside itself: the layers land in the cache (see `int4_cache`),
where the server's next step reads them in seconds.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable

from phi3_lsp.child_watch import ChildWatch
from phi3_lsp.scheduling import HIGHEST_NICE

log = logging.getLogger(__name__)


class Int4LayersProcess:
    """`phi3-lsp quantize --model SPEC`, started at once; `on_end(succeeded)` is called on a
    thread of its own when it exits (not after `stop`)."""

    def __init__(self, spec: str, on_end: Callable[[bool], None]) -> None:
        self._stopped = False
        self._process = subprocess.Popen(
            # -P: it runs in the server's folder, often the user's project, whose modules
            # must not stand in for the standard library's.
            [sys.executable, "-P", "-m", "phi3_lsp", "quantize", "--model", spec],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # its progress goes to stderr, the server's log
        )
        self._watch = ChildWatch(self._process)  # a killed server leaves it no core to take
        try:
            # It gets a core only when completions and the editor leave one.
            os.setpriority(os.PRIO_PROCESS, self._process.pid, HIGHEST_NICE)
        except OSError as error:  # it then runs at the server's priority
            log.warning("Could not lower the priority of the 4-bit layers' process: %s", error)
        log.info("Making the 4-bit layers of %s in process %d", spec, self._process.pid)
        threading.Thread(
            target=self._wait, args=(spec, on_end), name="phi3-int4-layers", daemon=True
        ).start()

    def stop(self) -> None:
        """End the process if it still runs (its partial work is never used: see `paths`)."""
        self._stopped = True
        if self._process.poll() is None:
            self._process.terminate()

    def _wait(self, spec: str, on_end: Callable[[bool], None]) -> None:
        code = self._process.wait()
        self._watch.release()
        if self._stopped:
            return
        if code != 0:
            log.warning("Making the 4-bit layers of %s failed (exit code %d)", spec, code)
        on_end(code == 0)
