"""A child's watcher: it kills the child once the server has died, and only then."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from phi3_lsp.child_watch import ChildWatch


def children_of_this_process() -> set[int]:
    """The pids of this process's children that run (not zombies)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (command) state ppid ...": the command may hold spaces and parentheses.
            state, parent = stat.read_text().rpartition(")")[2].split()[:2]
        except OSError:  # ended meanwhile
            continue
        if int(parent) == os.getpid() and state != "Z":
            children.add(int(stat.parent.name))
    return children


def test_a_released_watch_ends_and_leaves_its_child_alone() -> None:
    before = children_of_this_process()
    with subprocess.Popen(["sleep", "60"]) as child:
        try:
            watch = ChildWatch(child)
            assert len(children_of_this_process() - before - {child.pid}) == 1, "a watcher"
            watch.release()
            assert children_of_this_process() - before == {child.pid}, "the watcher ended"
            with pytest.raises(subprocess.TimeoutExpired):  # it did not kill its child
                child.wait(timeout=0.5)
        finally:
            child.kill()
