"""How torch's OpenMP threads wait for work between two parallel regions: set before torch loads.

A decode pass is a chain of small matrix products, each split over the threads. A thread that
sleeps as soon as its share is done must be woken for the next product, which costs more than
a small product takes: on SmolLM2 in int4, 2 such threads decode no faster than 1 (~70 ms a
step on an idle 2-core CPU). Threads that wait ~1 ms before they sleep keep up: ~55 ms a step
on 2. libgomp's default wait (~11 ms here) gains nothing more and burns a core for that long
after every request. Waiting threads that lose their core to another process slow every
product down; `pass_planner` then moves decode passes to fewer threads.
"""

from __future__ import annotations

from collections.abc import MutableMapping

GOMP_SPIN_COUNT = "30000"
"""libgomp (Linux builds of torch): spins before sleeping, ~1 ms on this class of CPU."""
KMP_BLOCK_TIME_MS = "1"
"""LLVM and Intel OpenMP (e.g. macOS builds of torch): milliseconds before sleeping."""
_USER_CHOICES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def configure_waiting(environ: MutableMapping[str, str]) -> None:
    """Let idle threads wait ~1 ms before they sleep, unless the environment already says how
    they should wait."""
    if any(name in environ for name in _USER_CHOICES):
        return
    environ["GOMP_SPINCOUNT"] = GOMP_SPIN_COUNT
    environ["KMP_BLOCKTIME"] = KMP_BLOCK_TIME_MS
