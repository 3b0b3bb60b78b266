"""transformers scans its model folders once per install, not twice per process.

`import transformers` and the first import from `transformers.models` each read all of
transformers' ~570 model folders (~1,700 files) to build their lazy import tables. The scan is
memoized per folder (`create_import_structure_from_path`, an `lru_cache`), but the cache holds
128 entries, so the second scan finds none of the first one's folders and reads them all
again: 0.3-0.4 s of every server start (transformers 5.25, 2-core AMD EPYC). Before that module
runs for the first time, `scan_transformers_models_once` arranges for its cache to be given
room for every folder, and for the table of the whole models folder to be kept in our cache
(`transformers-tables/`), keyed by the size and time of every file it is read from: a later
process reads it back (~2 ms, and ~17 ms to check the files) instead of scanning (~0.32 s).
If transformers is imported already, or no longer has that cache, it changes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from types import ModuleType
from typing import Any

_SCANNING_MODULE = "transformers.utils.import_utils"
_SCAN = "create_import_structure_from_path"
TABLES_FOLDER = "transformers-tables"

log = logging.getLogger(__name__)


def scan_transformers_models_once() -> None:
    """Give transformers' folder scan an unbounded cache when it is first imported."""
    if _SCANNING_MODULE in sys.modules or any(
        isinstance(finder, _UnboundedScanCache) for finder in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, _UnboundedScanCache())


class _UnboundedScanCache:
    """An import finder for the one module that scans; it leaves once it has found it.

    It leaves only when it returns a spec, which ends the import system's walk over
    `sys.meta_path`: removing itself and returning None would make the walk skip a finder.
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != _SCANNING_MODULE:
            return None
        spec = PathFinder.find_spec(fullname, path)
        loader = None if spec is None else spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return None  # the finders after this one import it as usual
        sys.meta_path.remove(self)
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            _unbound_scan_cache(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _unbound_scan_cache(module: ModuleType) -> None:
    # The recursive scan calls the module's global by name, so rebinding it is enough.
    scan = getattr(getattr(module, _SCAN, None), "__wrapped__", None)
    if callable(scan) and module.__file__ is not None:
        models = Path(module.__file__).parents[1] / "models"
        memoized = functools.lru_cache(maxsize=None)(scan)
        setattr(module, _SCAN, _SavedModelsTable(memoized, models, Path(module.__file__)))


class _SavedModelsTable:
    """The scan, with the models folder's table read from our cache when its files are
    unchanged (and written there after a scan); every other folder is scanned as before."""

    def __init__(self, scan: Callable[[str], Any], models: Path, scanner: Path) -> None:
        self._scan = scan
        self._models = models
        self._scanner = scanner  # the scanning code: its table changes with it
        self._table: Any = None

    def __call__(self, module_path: str) -> Any:
        folder = os.path.dirname(module_path) if os.path.isfile(module_path) else module_path
        if Path(folder) != self._models:
            return self._scan(module_path)
        if self._table is None:
            self._table = self._saved_or_scanned(folder)
        return self._table

    def _saved_or_scanned(self, folder: str) -> Any:
        from phi3_lsp.paths import cache_dir  # only now: the handshake never needs it

        tables = cache_dir() / TABLES_FOLDER
        saved = tables / f"{self._fingerprint()}.pickle"
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
    """Write `table` as `saved`, atomically, and drop the tables of other installs."""
    tables.mkdir(parents=True, exist_ok=True)
    staging = tables / f".{saved.name}.{os.getpid()}"
    staging.write_bytes(table)
    os.replace(staging, saved)
    for other in tables.glob("*.pickle"):
        if other != saved:
            other.unlink(missing_ok=True)
