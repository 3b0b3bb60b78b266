"""The import table of transformers' models folder, kept in our cache between processes.

transformers builds it by reading ~1,700 files in ~570 folders (0.32 s on a 2-core AMD EPYC);
read back it takes ~2 ms, and checking that no file changed ~17 ms. A saved table is keyed by
the size and modification time of every file under the folder and of the scanning code, so an
upgrade or an edited model file makes a new scan; `transformers_scan` installs it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from phi3_lsp.paths import cache_dir

TABLES_FOLDER = "transformers-tables"
KEPT_TABLES = 4
"""Tables kept (the newest): installs sharing a cache must not keep replacing each other's."""

log = logging.getLogger(__name__)


class SavedModelsTable:
    """The scan, with the models folder's table read from our cache when its files are
    unchanged (and written there after a scan); every other folder is scanned as before."""

    def __init__(self, scan: Callable[[str], Any], models: Path, scanner: Path) -> None:
        self._scan = scan
        self._models = models
        self._scanner = scanner  # the scanning code: its table changes with it
        self._table: Any = None

    @classmethod
    def for_scanning_module(cls, scan: Callable[[str], Any], module_file: str) -> SavedModelsTable:
        """The table of the models folder beside transformers' `utils/import_utils.py`."""
        scanner = Path(module_file)
        return cls(scan, scanner.parents[1] / "models", scanner)

    def __call__(self, module_path: str) -> Any:
        folder = os.path.dirname(module_path) if os.path.isfile(module_path) else module_path
        if Path(folder) != self._models:
            return self._scan(module_path)
        if self._table is None:
            self._table = self._saved_or_scanned(folder)
        return self._table

    def _saved_or_scanned(self, folder: str) -> Any:
        tables = cache_dir() / TABLES_FOLDER
        try:
            saved = tables / f"{self._fingerprint()}.pickle"
        except OSError:  # a file went away while it was listed (an upgrade): scan as before
            return self._scan(folder)
        try:
            return pickle.loads(saved.read_bytes())
        except FileNotFoundError:
            pass
        except Exception:  # a damaged file (any unpickling error): scan and write it anew
            log.debug("Unreadable saved transformers table %s", saved, exc_info=True)
        table = self._scan(folder)
        try:
            _replace_saved_tables(tables, saved, pickle.dumps(table))
        except OSError:
            log.debug("Could not save the transformers table in %s", tables, exc_info=True)
        return table

    def _fingerprint(self) -> str:
        """A hash of the size and modification time of the scanning code and every file the
        scan may read."""
        digest = hashlib.sha256(f"{sys.version}\n{self._models}\n".encode())
        for path in (self._scanner, *_files_under(self._models)):
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:32]


def _files_under(folder: Path) -> Iterator[Path]:
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda entry: entry.name):
            if entry.name == "__pycache__":
                continue
            if entry.is_dir():
                yield from _files_under(Path(entry.path))
            else:
                yield Path(entry.path)


def _replace_saved_tables(tables: Path, saved: Path, table: bytes) -> None:
    """Write `table` as `saved`, atomically, and drop all but the newest `KEPT_TABLES`."""
    tables.mkdir(parents=True, exist_ok=True)
    staging = tables / f".{saved.name}.{os.getpid()}"
    staging.write_bytes(table)
    os.replace(staging, saved)
    others = [path for path in tables.glob("*.pickle") if path != saved]
    # Timestamps can tie (the file system's clock is coarse): `saved` is kept by name.
    others.sort(key=lambda path: path.stat().st_mtime_ns, reverse=True)
    for older in others[KEPT_TABLES - 1 :]:
        older.unlink(missing_ok=True)
