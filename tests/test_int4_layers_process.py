"""The process that makes a model's 4-bit layers, started from the server's folder."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from phi3_lsp.int4_layers_process import Int4LayersProcess


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
