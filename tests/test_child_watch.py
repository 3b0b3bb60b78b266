"""A child's watcher: it kills the child once the server has died, and only then."""

from __future__ import annotations

import os
import subprocess

import pytest

from phi3_lsp.child_watch import ChildWatch
from processes import children_of


def test_a_released_watch_ends_and_leaves_its_child_alone() -> None:
    before = children_of(os.getpid())
    with subprocess.Popen(["sleep", "60"]) as child:
        try:
            watch = ChildWatch(child)
            assert len(children_of(os.getpid()) - before - {child.pid}) == 1, "a watcher"
            watch.release()
            assert children_of(os.getpid()) - before == {child.pid}, "the watcher ended"
            with pytest.raises(subprocess.TimeoutExpired):  # it did not kill its child
                child.wait(timeout=0.5)
        finally:
            child.kill()
