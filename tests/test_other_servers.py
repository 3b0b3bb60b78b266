"""Other phi3-lsp processes on the machine: found by their command line, with their memory."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model_sources import folder_source
from phi3_lsp import engine as engine_module
from phi3_lsp.engine import ModelEngine
from phi3_lsp.memory_fit import RUNTIME_BYTES, prompt_bytes, weights_bytes
from phi3_lsp.other_servers import OtherProcess, other_phi3_processes
from test_memory_fit import meta_model

STARTED_WITHIN_SECONDS = 30.0
PYTHON = shlex.quote(sys.executable)
LIST_OTHERS = (
    "import json; from phi3_lsp.other_servers import other_phi3_processes; "
    "import os; others = [other.pid for other in other_phi3_processes()]; "
    "print(json.dumps({'parent': os.getppid(), 'others': others}))"
)


def find(pid: int) -> OtherProcess | None:
    return next((other for other in other_phi3_processes() if other.pid == pid), None)


def found_holding_memory(pid: int) -> OtherProcess:
    """The server `pid` once it is listed with the memory its imports take (~10 MB)."""
    deadline = time.monotonic() + STARTED_WITHIN_SECONDS
    while (found := find(pid)) is None or found.private_bytes < 5 << 20:
        assert time.monotonic() < deadline, "the server never showed up, or holds no memory"
        time.sleep(0.1)
    return found


def wait_for_exec(pid: int, argument: str) -> None:
    """Wait until `pid` runs the command line that has `argument` (not yet the shell's)."""
    deadline = time.monotonic() + STARTED_WITHIN_SECONDS
    while argument.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
        assert time.monotonic() < deadline, f"process {pid} never ran {argument}"
        time.sleep(0.05)


@pytest.fixture
def detached() -> Iterator[Callable[[str, str], int]]:
    """Starts `command` (a shell command line, its stdin a pipe that stays open) from a shell
    that exits at once: like another editor window's server, it is no descendant of this
    process. Returns its pid once it runs the command line with `argument`; it is killed after
    the test."""
    groups: list[int] = []

    def start(command: str, argument: str) -> int:
        launched = subprocess.run(
            ["setsid", "sh", "-c", f"sleep 120 2>/dev/null | {command} >/dev/null 2>&1 & echo $!"],
            capture_output=True,
            text=True,
            check=True,
        )
        pid = int(launched.stdout)
        groups.append(os.getpgid(pid))  # the command and its stdin's `sleep`
        wait_for_exec(pid, argument)
        return pid

    yield start
    for group in groups:
        with contextlib.suppress(ProcessLookupError):  # all of it ended by itself
            os.killpg(group, signal.SIGKILL)


def test_another_windows_server_is_found_with_the_memory_it_holds(
    detached: Callable[[str, str], int],
) -> None:
    found = found_holding_memory(detached(f"{PYTHON} -m phi3_lsp", "phi3_lsp"))
    assert found.private_bytes < 2 << 30  # a server without a model: ~10 MB
    assert find(os.getpid()) is None  # not this process


def test_a_process_this_one_started_is_its_own_and_not_listed() -> None:
    # As the server's own 4-bit layers' process: `python -m phi3_lsp quantize ...`.
    child = subprocess.Popen(
        [sys.executable, "-m", "phi3_lsp"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    try:
        wait_for_exec(child.pid, "phi3_lsp")
        assert find(child.pid) is None
    finally:
        child.kill()
        child.wait()


def test_the_phi3_lsp_process_that_started_this_one_is_not_listed(tmp_path: Path) -> None:
    # As `phi3-lsp demo`, which runs the server: the server must not blame the demo.
    script = tmp_path / "phi3-lsp"
    script.write_text(
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {LIST_OTHERS!r}], check=True)\n"
    )
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    seen = json.loads(ran.stdout)
    assert seen["parent"] not in seen["others"]


def test_other_programs_are_not_listed(detached: Callable[[str, str], int]) -> None:
    # A Python process that has phi3_lsp on its command line only as arguments.
    other = detached(f"{PYTHON} -c 'import time; time.sleep(30)' phi3_lsp -m", "-c")
    assert find(other) is None


def test_a_model_left_without_weights_names_the_server_whose_memory_would_make_room(
    detached: Callable[[str, str], int], tiny_phi3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = found_holding_memory(detached(f"{PYTHON} -m phi3_lsp", "phi3_lsp")).pid
    model = meta_model(tiny_phi3_dir)
    needed = RUNTIME_BYTES + prompt_bytes(model.config) + weights_bytes(model, "fp32")
    monkeypatch.setattr(engine_module, "available_memory", lambda: needed - (4 << 20))
    engine = ModelEngine.load(folder_source(tiny_phi3_dir, weights=True), threads=1)
    assert not engine.has_weights
    hint = engine.source.missing_weights_hint or ""
    # Named by process id, among any other phi3-lsp processes the machine runs at the time.
    assert re.search(rf"\(process(es)? ([0-9]+, )*{server}[,)]", hint), hint
    assert re.search(r"To complete, stop (it|them) and restart this server", hint), hint
