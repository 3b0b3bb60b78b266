"""Freed tensors' memory goes back to the system when asked, not only to the C heap; large
blocks are kept for reuse until then."""

from __future__ import annotations

import subprocess
import sys
import textwrap

RESIDENT_MIB = textwrap.dedent(
    """
    def resident_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    """
)
"""A probe's own resident memory, for the probes below."""

# In a fresh process, so that no other test's allocations are in the heap. Blocks of a size
# freed before come from the heap, which a plain free does not shrink: the second round shows
# what a server holds after its first long prompts are gone.
PROBE = RESIDENT_MIB + textwrap.dedent(
    """
    import threading
    import torch
    from phi3_lsp.memory_release import release_freed_memory

    def rounds():
        for _ in range(2):
            blocks = [torch.ones(1, 32, 1024, 96) for _ in range(40)]  # 12 MiB each
            before_free = resident_mib()
            del blocks
            freed = resident_mib()
            release_freed_memory()
            print(before_free, freed, resident_mib())

    thread = threading.Thread(target=rounds)  # a model thread, with its own heap
    thread.start()
    thread.join()
    """
)


def test_released_memory_leaves_the_process() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    *_, last_round = result.stdout.splitlines()
    allocated, freed, released = map(int, last_round.split())
    assert allocated - freed < 100  # a plain free kept the blocks (480 MiB) in the heap...
    assert allocated - released > 400  # ...and the release gave them back


# Blocks above the largest size glibc's malloc ever keeps by default (32 MiB): it maps each on
# its own and unmaps it when freed.
LARGE_BLOCKS = RESIDENT_MIB + textwrap.dedent(
    """
    import sys, threading
    import torch
    from phi3_lsp.memory_release import keep_freed_memory_for_reuse, release_freed_memory

    def rounds():
        for _ in range(2):
            blocks = [torch.ones(10 << 20) for _ in range(8)]  # 40 MiB each
            allocated = resident_mib()
            del blocks
            freed = resident_mib()
            release_freed_memory()
            print(allocated, freed, resident_mib())

    if sys.argv[1] == "keep":
        keep_freed_memory_for_reuse()
    thread = threading.Thread(target=rounds)
    thread.start()
    thread.join()
    """
)


def _large_blocks(mode: str) -> tuple[int, int, int]:
    result = subprocess.run(
        [sys.executable, "-c", LARGE_BLOCKS, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    *_, last_round = result.stdout.splitlines()
    allocated, freed, released = map(int, last_round.split())
    return allocated, freed, released


def test_large_freed_blocks_are_kept_for_reuse_until_released() -> None:
    allocated, freed, released = _large_blocks("default")
    assert allocated - freed > 250  # by default each of the 320 MiB goes back when freed
    allocated, freed, released = _large_blocks("keep")
    assert allocated - freed < 50  # kept: the next pass's blocks need no new pages...
    assert allocated - released > 250  # ...until the release gives them back
