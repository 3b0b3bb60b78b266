"""The other phi3-lsp processes on this machine, and the memory they hold.

Each editor window starts a server of its own, and each server loads its model: the second
window's may find too little memory left for the weights. Its message then names the processes
that hold it, so that the user knows what to close. Processes this one started (its 4-bit
layers' process) are its own, not others.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class OtherProcess:
    """A phi3-lsp process other than this one."""

    pid: int
    resident_bytes: int


def other_phi3_processes(proc: Path = PROC) -> list[OtherProcess]:
    """The phi3-lsp processes other than this one and its descendants, the largest first;
    none where /proc cannot be read (not Linux)."""
    try:
        own = int((proc / "self").resolve().name)
        pids = [int(entry.name) for entry in proc.iterdir() if entry.name.isdigit()]
    except (OSError, ValueError):
        return []
    parents = {pid: _parent(proc, pid) for pid in pids}
    others = [
        OtherProcess(pid, _resident_bytes(proc, pid))
        for pid in pids
        if pid != own and not _descends_from(pid, own, parents) and _runs_phi3_lsp(proc, pid)
    ]
    return sorted(others, key=lambda other: -other.resident_bytes)


def _runs_phi3_lsp(proc: Path, pid: int) -> bool:
    """`python -m phi3_lsp ...` or the `phi3-lsp` script (run as `python .../phi3-lsp ...`)."""
    try:
        args = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False  # it ended meanwhile, or is not ours to read
    module_run = any(pair == (b"-m", b"phi3_lsp") for pair in itertools.pairwise(args))
    return module_run or any(os.path.basename(arg) == b"phi3-lsp" for arg in args[:2])


def _parent(proc: Path, pid: int) -> int | None:
    try:
        stat = (proc / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
        # "pid (command) state ppid ...": the command may hold spaces and parentheses.
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _descends_from(pid: int, ancestor: int, parents: dict[int, int | None]) -> bool:
    seen = set()
    parent = parents.get(pid)
    while parent is not None and parent not in seen:
        if parent == ancestor:
            return True
        seen.add(parent)
        parent = parents.get(parent)
    return False


def _resident_bytes(proc: Path, pid: int) -> int:
    try:
        return int((proc / str(pid) / "statm").read_text(encoding="ascii").split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0
