"""transformers reads its model folders' files once per install, not twice per server process."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_lsp.transformers_tables import KEPT_TABLES, TABLES_FOLDER, SavedModelsTable

# Records every model source file that is read (the scan opens them; imports do not use
# `open`) while the model classes our engine uses are imported.
FILES_READ = """
import builtins, json, os, sys
read = []
real_open = builtins.open
def recording_open(file, *args, **kwargs):
    read.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else "")
    return real_open(file, *args, **kwargs)
builtins.open = recording_open
import phi3_lsp
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer
builtins.open = real_open
models = os.path.dirname(sys.modules["transformers.models"].__file__)
imported = [os.path.dirname(module.__file__) for name, module in list(sys.modules.items())
            if name.startswith("transformers.models") and hasattr(module, "__path__")]
print(json.dumps({"read": [path for path in read if path.startswith(models + os.sep)],
                  "imported": imported}))
"""


def _files_read(script: str, cache: Path) -> tuple[list[str], set[str]]:
    """Model source files read, and the folders of the model packages imported."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PHI3_LSP_CACHE": str(cache)},
    )
    found = json.loads(result.stdout.splitlines()[-1])
    return found["read"], set(found["imported"])


def _outside(read: list[str], imported: set[str]) -> list[str]:
    # A package that is imported builds its own table from its own folder (a few files).
    return [path for path in read if os.path.dirname(path) not in imported]


def test_each_model_file_is_read_once_on_the_way_to_a_model_class(tmp_path: Path) -> None:
    read, imported = _files_read(FILES_READ, tmp_path)
    outside = _outside(read, imported)
    assert len(outside) > 1000  # transformers did build its import tables from the files
    assert len(set(outside)) == len(outside)


def test_a_later_server_process_reads_no_model_files_for_the_tables(tmp_path: Path) -> None:
    _files_read(FILES_READ, tmp_path)
    read, imported = _files_read(FILES_READ, tmp_path)
    assert _outside(read, imported) == []
    assert len(list((tmp_path / TABLES_FOLDER).glob("*.pickle"))) == 1


def test_the_saved_table_is_the_one_a_scan_makes(tmp_path: Path) -> None:
    script = (
        "import os, phi3_lsp, transformers\n"
        "from transformers.utils import import_utils\n"
        "scan = import_utils.create_import_structure_from_path\n"
        "models = os.path.join(os.path.dirname(transformers.__file__), 'models')\n"
        "print(scan(models) == scan._scan(models), len(scan(models)))\n"
    )
    env = {**os.environ, "PHI3_LSP_CACHE": str(tmp_path)}
    for _ in range(2):  # the first process scans and saves; the second reads it back
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
        )
        same, folders = result.stdout.split()
        assert same == "True"
        assert int(folders) > 100


def test_nothing_changes_when_transformers_was_imported_first(tmp_path: Path) -> None:
    script = FILES_READ.replace("import phi3_lsp\n", "import transformers, phi3_lsp\n")
    read, imported = _files_read(script, tmp_path)
    # transformers' own behaviour: its second import table reads the files of models never
    # imported again, and nothing is saved.
    outside = _outside(read, imported)
    assert len(outside) - len(set(outside)) > 1000
    assert not (tmp_path / TABLES_FOLDER).exists()


class CountedScan:
    """A folder's 'table': its file names, counting how often it was made."""

    def __init__(self) -> None:
        self.scans = 0

    def __call__(self, folder: str) -> list[str]:
        self.scans += 1
        return sorted(os.listdir(folder))


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PHI3_LSP_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "models"
    (folder / "llama").mkdir(parents=True)
    (folder / "llama" / "modeling_llama.py").write_text("__all__ = ['LlamaModel']\n")
    return folder


def saved_table(models: Path, scan: CountedScan) -> object:
    """The table as a new process gets it."""
    return SavedModelsTable(scan, models, models / "llama" / "modeling_llama.py")(str(models))


def test_a_changed_file_makes_a_new_scan(models: Path) -> None:
    scan = CountedScan()
    assert saved_table(models, scan) == ["llama"]
    assert saved_table(models, scan) == ["llama"]
    assert scan.scans == 1
    (models / "phi3").mkdir()
    (models / "phi3" / "modeling_phi3.py").write_text("__all__ = ['Phi3Model']\n")
    assert saved_table(models, scan) == ["llama", "phi3"]
    assert scan.scans == 2
    (models / "llama" / "modeling_llama.py").write_text("__all__ = ['LlamaModel', 'Other']\n")
    saved_table(models, scan)
    assert scan.scans == 3


def test_tables_of_older_installs_do_not_pile_up(models: Path) -> None:
    scan = CountedScan()
    tables = models.parent / "cache" / TABLES_FOLDER
    for install in range(KEPT_TABLES + 3):
        (models / "llama" / "modeling_llama.py").write_text(f"# install {install}\n")
        saved_table(models, scan)
    assert len(list(tables.glob("*.pickle"))) == KEPT_TABLES
    # The newest is among them: the last install's table is read back, not made again.
    saved_table(models, scan)
    assert scan.scans == KEPT_TABLES + 3


def test_a_damaged_saved_table_is_made_again(models: Path) -> None:
    scan = CountedScan()
    saved_table(models, scan)
    [saved] = (models.parent / "cache" / TABLES_FOLDER).glob("*.pickle")
    saved.write_bytes(b"not a pickle")
    assert saved_table(models, scan) == ["llama"]
    assert scan.scans == 2
    assert pickle.loads(saved.read_bytes()) == ["llama"]


def test_other_folders_are_scanned_as_before(models: Path) -> None:
    scan = CountedScan()
    table = SavedModelsTable(scan, models, models / "llama" / "modeling_llama.py")
    assert table(str(models / "llama")) == ["modeling_llama.py"]
    assert not (models.parent / "cache").exists()
