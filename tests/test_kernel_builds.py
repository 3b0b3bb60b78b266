"""How our kernels are built, on any CPU: a compiler that is missing or fails is named, and one
that hangs ends, with what it started, at its time limit and when the server is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from phi3_lsp import cpu_kernels
from phi3_lsp.cpu_kernels import FP32_BUILDS, TILES_FROM_ROWS, build_library
from phi3_lsp.generation import CHECKED_ROWS_AT_MOST
from processes import all_ended, json_once_written, process_runs, python_path

ANY_BUILD = FP32_BUILDS[-1]
"""The stand-in compilers build nothing: any build is theirs to fail, on any CPU."""

HANGING = {
    # A compiler that hangs (one waiting on a network): the process started is the one to end.
    "compiler": "echo [$$] > {started}\nexec sleep 120\n",
    # A wrapper (ccache, distcc, a script) whose compiler hangs: a child the wrapper waits for.
    "wrapper": "sleep 100000 &\necho [$$, $!] > {started}\nwait\n",
}
"""Their processes do not end by themselves: only a kill ends them."""


@pytest.fixture(params=sorted(HANGING))
def hanging_compiler(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in `cc` that writes the pids it runs as (a JSON list) to the second path, and
    hangs."""
    started = tmp_path / "started.json"
    compiler = tmp_path / "cc"
    compiler.write_text("#!/bin/sh\n" + HANGING[request.param].format(started=started))
    compiler.chmod(0o755)
    return compiler, started


def kill_those_running(pids: list[int]) -> None:
    for pid in pids:
        if process_runs(pid):
            os.kill(pid, signal.SIGKILL)


def test_passes_that_check_drafted_tokens_never_take_the_tiles() -> None:
    # Tile products round apart from the vectors' now and then (int4_tiles.c): a pass whose
    # tokens are compared with one-token passes must keep the vectors, or drafts change the text.
    assert TILES_FROM_ROWS > CHECKED_ROWS_AT_MOST


def test_a_missing_or_failing_compiler_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no C compiler: no-such-cc"):
        build_library(ANY_BUILD, tmp_path, ["no-such-cc"])
    with pytest.raises(OSError, match="false failed"):
        build_library(ANY_BUILD, tmp_path, ["false"])
    assert not any((tmp_path / "kernels").glob("*/*.so")), "a failed build left a library"


def test_a_compiler_that_hangs_is_killed_at_its_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hanging_compiler: tuple[Path, Path]
) -> None:
    compiler, started = hanging_compiler
    monkeypatch.setattr(cpu_kernels, "_BUILD_SECONDS", 1.0)
    with ThreadPoolExecutor(1) as pool:
        build = pool.submit(build_library, ANY_BUILD, tmp_path / "cache", [str(compiler)])
        running = json_once_written(started)
        assert running, "the compiler ran"
        try:
            # A build that waited for the compiler's processes would never return: they run on
            # until killed. The time given is only where this test stops waiting for it.
            try:
                error = build.exception(timeout=120)
            except TimeoutError:
                pytest.fail("the build waited for the compiler's processes to end")
            assert isinstance(error, subprocess.TimeoutExpired), error
            assert all_ended(running, within=5), "the compiler's processes were left running"
        finally:
            kill_those_running(running)  # also ends a build that waits for them
    kept = [path.name for path in (tmp_path / "cache" / "kernels").iterdir() if path.is_dir()]
    assert kept == [], "nothing half-built"


BUILD_IN_A_SERVER = """
import sys
from pathlib import Path
from phi3_lsp.cpu_kernels import FP32_BUILDS, build_library
build_library(FP32_BUILDS[-1], Path(sys.argv[1]), [sys.argv[2]])
"""


def test_a_compiler_ends_when_the_server_is_killed_outright(
    tmp_path: Path, hanging_compiler: tuple[Path, Path]
) -> None:
    compiler, started = hanging_compiler
    command = [sys.executable, "-c", BUILD_IN_A_SERVER, str(tmp_path / "cache"), str(compiler)]
    with subprocess.Popen(command, env={**os.environ, "PYTHONPATH": python_path()}) as server:
        try:
            running = json_once_written(started)
            assert running, "the compiler ran"
        finally:
            server.kill()
    try:
        assert all_ended(running, within=5)
    finally:
        kill_those_running(running)
