"""transformers scans its model folders once per install, not twice per process.

`import transformers` and the first import from `transformers.models` each read all of
transformers' ~570 model folders (~1,700 files) to build their lazy import tables. The scan is
memoized per folder (`create_import_structure_from_path`, an `lru_cache`), but the cache holds
128 entries, so the second scan finds none of the first one's folders and reads them all
again: 0.3-0.4 s of every server start (transformers 5.25, 2-core AMD EPYC). Before that module
runs for the first time, `scan_transformers_models_once` arranges for its cache to be given
room for every folder, and for the table of the whole models folder to be read from our cache
when a process before this one made it (see `transformers_tables`). If transformers is
imported already, or no longer has that cache, it changes nothing.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec, PathFinder
from types import ModuleType

_SCANNING_MODULE = "transformers.utils.import_utils"
_SCAN = "create_import_structure_from_path"


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
        # Only now: the server answers `initialize` before anything imports transformers.
        from phi3_lsp.transformers_tables import SavedModelsTable

        memoized = functools.lru_cache(maxsize=None)(scan)
        setattr(module, _SCAN, SavedModelsTable.for_scanning_module(memoized, module.__file__))
