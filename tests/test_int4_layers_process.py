"""The process that makes a model's 4-bit layers, started from the server's folder."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from phi3_lsp.int4_layers_process import Int4LayersProcess
from processes import all_ended, json_once_written, process_runs, python_path


@pytest.mark.slow
def test_it_makes_the_layers_from_a_project_folder_whose_files_shadow_the_standard_library(
    tiny_phi3_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server runs in the editor's project folder: its `json.py` must not be imported in
    # place of the standard library's by the process the server starts.
    project = tmp_path / "project"
    project.mkdir()
    (project / "json.py").write_text('raise ImportError("the project\'s json.py")\n')
    monkeypatch.chdir(project)
    monkeypatch.setenv("PHI3_LSP_CACHE", str(tmp_path / "cache"))
    ended = threading.Event()
    outcome: list[bool] = []

    def on_end(succeeded: bool) -> None:
        outcome.append(succeeded)
        ended.set()

    Int4LayersProcess(str(tiny_phi3_dir), on_end)
    assert ended.wait(300)
    assert outcome == [True]
    assert list((tmp_path / "cache" / "int4").glob("*/int4.safetensors"))


# A server that starts the process from a thread that ends at once (it must not end with it),
# with a stand-in for Python that writes its pid and sleeps in place of the quantizing.
SERVER_MAKING_LAYERS = """
import sys, threading, time
from phi3_lsp.int4_layers_process import Int4LayersProcess
sys.executable = sys.argv[1]
starting = threading.Thread(target=Int4LayersProcess, args=("a-model", lambda made: None))
starting.start()
starting.join()
print("started", flush=True)
time.sleep(120)
"""


def test_the_process_ends_when_the_server_is_killed_outright(tmp_path: Path) -> None:
    # An editor that kills a hung server, or the OOM killer: 35-50 s of quantizing a model no
    # one serves would take a core from whatever runs next.
    started = tmp_path / "started.json"
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\necho [$$] > {started}\nexec sleep 120\n")
    python.chmod(0o755)
    command = [sys.executable, "-c", SERVER_MAKING_LAYERS, str(python)]
    environment = {**os.environ, "PYTHONPATH": python_path()}
    with subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None and server.stdout.readline() == "started\n"
            (layers,) = json_once_written(started)
            assert process_runs(layers), "it outlives the thread that started it"
        finally:
            server.kill()
    assert all_ended([layers], within=5)
