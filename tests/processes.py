"""Processes for tests: whether one runs, a server's process killed outright, stand-in commands."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import phi3_lsp

# Where the phi3_lsp under test is, for processes the tests start.
SERVER_PATH = str(Path(phi3_lsp.__file__).parents[1])


def process_runs(pid: int) -> bool:
    """Whether `pid` is a process that runs (a zombie, killed and not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "zombie" not in status


def children_of(pid: int) -> set[int]:
    """The pids of `pid`'s children that run (not zombies)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (command) state ppid ...": the command may hold spaces and parentheses.
            state, parent = stat.read_text().rpartition(")")[2].split()[:2]
        except OSError:  # ended meanwhile
            continue
        if int(parent) == pid and state != "Z":
            children.add(int(stat.parent.name))
    return children


def all_ended(pids: list[int], within: float) -> bool:
    """Whether the processes `pids` (none of them ours to wait for) end within `within` s."""
    deadline = time.monotonic() + within
    while any(process_runs(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def json_once_written(path: Path, within: float = 30.0) -> Any:
    """The JSON a process writes to `path`, once it has (None if it has not in `within` s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().endswith("\n"):
            return json.loads(path.read_text())
        time.sleep(0.05)
    return None


def write_fake_pip(folder: Path, started: Path) -> Path:
    """A `pip` package (put the returned folder first on PYTHONPATH) that starts a process of
    its own, as pip does to build an sdist's metadata, writes `[its pid, that process's pid,
    its temporary folder]` to `started`, and waits."""
    fake_pip = folder / "pip"
    fake_pip.mkdir(parents=True)
    (fake_pip / "__init__.py").touch()
    (fake_pip / "__main__.py").write_text(
        "import json, os, subprocess, sys, tempfile\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"with open({str(started)!r}, 'w') as started:\n"
        "    started.write(json.dumps([os.getpid(), child.pid, tempfile.gettempdir()]) + '\\n')\n"
        "child.wait()\n"
    )
    return folder


def python_path(*folders: Path | str) -> str:
    """A PYTHONPATH of `folders`, then the phi3_lsp under test."""
    return os.pathsep.join([*map(str, folders), SERVER_PATH])
