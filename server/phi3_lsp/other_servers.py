"""The other phi3-lsp processes of this user, and the memory that stopping them would free.

Each editor window starts a server of its own, and each server loads its model: the second
window's may find too little memory left for the weights. Its message then names the processes
that hold it, so that the user knows what to close. This process's own lineage is not "other":
its children (the 4-bit layers' process) and its parents (`phi3-lsp demo`, which runs it).
"""

from __future__ import annotations

import itertools
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class OtherProcess:
    """A phi3-lsp process other than this one."""

    pid: int
    private_bytes: int
    """Its memory that no other process maps (libraries shared with this one are not counted):
    about what stopping it frees."""


def other_phi3_processes(proc: Path = PROC) -> list[OtherProcess]:
    """This user's phi3-lsp processes outside this one's lineage, the largest first; none where
    /proc cannot be read (not Linux)."""
    try:
        own = int((proc / "self").resolve().name)
        pids = [int(entry.name) for entry in proc.iterdir() if entry.name.isdigit()]
    except (OSError, ValueError):
        return []
    parents = {pid: _parent(proc, pid) for pid in pids}
    own_and_parents = {own, *_ancestors(own, parents)}
    others = [
        OtherProcess(pid, _private_bytes(proc, pid))
        for pid in pids
        if pid not in own_and_parents
        and own not in _ancestors(pid, parents)  # a child of this process
        and _is_this_users(proc, pid)
        and _runs_phi3_lsp(proc, pid)
    ]
    return sorted(others, key=lambda other: -other.private_bytes)


def _runs_phi3_lsp(proc: Path, pid: int) -> bool:
    """`python -m phi3_lsp ...` or the `phi3-lsp` script (run as `python .../phi3-lsp ...`)."""
    try:
        args = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False  # it ended meanwhile
    module_run = any(pair == (b"-m", b"phi3_lsp") for pair in itertools.pairwise(args))
    return module_run or any(os.path.basename(arg) == b"phi3-lsp" for arg in args[:2])


def _is_this_users(proc: Path, pid: int) -> bool:
    """Only the user's own processes are theirs to stop."""
    try:
        return (proc / str(pid)).stat().st_uid == os.getuid()
    except OSError:
        return False


def _parent(proc: Path, pid: int) -> int | None:
    try:
        stat = (proc / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
        # "pid (command) state ppid ...": the command may hold spaces and parentheses.
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _ancestors(pid: int, parents: dict[int, int | None]) -> list[int]:
    found: list[int] = []
    parent = parents.get(pid)
    while parent is not None and parent not in found:
        found.append(parent)
        parent = parents.get(parent)
    return found


def _private_bytes(proc: Path, pid: int) -> int:
    """Resident memory less the pages backed by files or shared (libraries, torch's code):
    `statm`'s resident minus shared fields, in pages."""
    try:
        fields = (proc / str(pid) / "statm").read_text(encoding="ascii").split()
        return max(0, int(fields[1]) - int(fields[2])) * mmap.PAGESIZE
    except (OSError, IndexError, ValueError):
        return 0
