"""4-bit layers kept on disk: made once per checkpoint, read back on every later load.

Quantizing Phi-3-mini's 3.6 billion weights takes about half a minute here; reading its
2.3 GB of 4-bit layers back takes seconds, and the checkpoint's own linear weights, which
safetensors maps lazily, are then never read. An entry is keyed by the checkpoint files
(path, size, modification time), the torch version and CPU code path (the packed layout is
its kernel's) and FORMAT_VERSION; anything else the model needs still comes from the
checkpoint.

A load that makes or reads an entry deletes the ones it supersedes: for the same checkpoint
folder and CPU code path, those of this torch version at once (an earlier state of the
checkpoint, another format), those of another torch version once unread for
`UNREAD_FOR_SECONDS`. Another install of phi3-lsp sharing the cache (a project's environment
beside a tool's own) reads its entries on each of its loads, which marks them read (their
folder's modification time); an upgrade of torch leaves the old version's unread. Entries
whose checkpoint folder was deleted go too: this torch version's at once, another's once
unread for `READING_SECONDS` (its read may still be going on).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from phi3_lsp.build_waits import waiting_for_another_process
from phi3_lsp.checkpoint_int4 import int4_tensors_from_files
from phi3_lsp.load_stops import StopCheck
from phi3_lsp.paths import (
    build_once,
    cache_dir,
    folder_device,
    is_built,
    remove_built,
    remove_superseded,
    source_deleted,
)
from phi3_lsp.progress import ProgressUpdate
from phi3_lsp.quantize import int4_tensors, quantize_to_int4
from phi3_lsp.read_ahead import cache_again_in_large_pages, read_ahead_if_cold

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Raised whenever what `quantize_to_int4` stores changes meaning."""
TENSORS_FILE = "int4.safetensors"
UNREAD_FOR_SECONDS = 28 * 24 * 3600.0
"""Another torch version's layers unread this long were left by an upgrade of torch: an install
sharing the cache reads its own on each of its loads; one not started for longer makes its
own again, once (Phi-3-mini's: 2.3 GB, 35-50 s)."""
READING_SECONDS = 600.0
"""Another torch version's layers read (or made) this recently may still be read: Phi-3-mini's
take seconds to a minute. Those of a checkpoint since deleted go once unread this long."""


def load_int4(
    load_checkpoint: Callable[[], nn.Module],
    weights_dir: Path,
    report: Callable[[str], None],
    shapes: Callable[[], nn.Module],
    stop: StopCheck | None = None,
) -> nn.Module:
    """The model `load_checkpoint()` gives, in its int4 form, from the cache when it has it.

    `report` hears what is being done. `shapes()` gives the model's modules without weights:
    the 4-bit layers are made from the files one weight at a time where they allow it (see
    `checkpoint_int4`), else from the loaded model. A cache entry that cannot be used
    (damaged, or from another version of the model code) is made again. Raises
    `LoadStopped` once `stop` says the load is no longer wanted while another process makes
    the layers (35-50 s for Phi-3-mini's): another model or weight format chosen meanwhile
    does not wait for them.
    """
    entry = int4_entry(weights_dir)
    for _ in range(2):  # a second round makes again an entry found unusable
        made = _made_once(entry, load_checkpoint, weights_dir, report, shapes, stop)
        if made is not None:
            return made
        if not is_built(entry):
            break  # the cache cannot be written
        report("Reading its 4-bit layers from the cache")
        _mark_read(entry)  # before: a tidy-up elsewhere must not take it while it is read
        model = load_checkpoint()
        read_ahead_if_cold(entry / TENSORS_FILE)
        try:
            layers = quantize_to_int4(model, load_file(entry / TENSORS_FILE))
        except (OSError, KeyError, ValueError, SafetensorError) as error:
            log.warning("The 4-bit cache %s is unusable (%s); quantizing again.", entry, error)
            remove_built(entry)  # unless a build of it holds the lock: then it makes a new one
            continue
        log.info("Read %d linear layers in 4 bits from %s", layers, entry)
        # On every read, layers just made too: after an upgrade of torch, its layers are made
        # once, then only read.
        _remove_superseded(entry)
        return model
    model, _ = _made(load_checkpoint, weights_dir, report, shapes)
    return model


def _made_once(
    entry: Path,
    load_checkpoint: Callable[[], nn.Module],
    weights_dir: Path,
    report: Callable[[str], None],
    shapes: Callable[[], nn.Module],
    stop: StopCheck | None,
) -> nn.Module | None:
    """The model in its int4 form, its layers made under the entry's build lock where they
    cannot be kept in `entry`; None when `entry` is built (by this call, by another process
    meanwhile: it is waited for) or the lock cannot be taken (a cache that cannot be written):
    the caller reads them, or makes them.

    Two editor windows opened at once, or `phi3-lsp quantize` beside a server, would otherwise
    each make the same layers (Phi-3-mini's: 35-50 s of a core), one process's then unused.
    Layers made and kept are read back like any later load's: mapped from the file in 2 MB
    pages, where the made ones are private memory in 4 KB pages (Phi-3-mini-sized: 2.2 GB;
    decode passes ~125 against ~111 ms).
    """
    made: list[nn.Module] = []
    making = False

    def make(staging: Path) -> None:
        nonlocal making
        making = True
        model, stored = _made(load_checkpoint, weights_dir, report, shapes)
        made.append(model)
        save_file(stored, str(staging / TENSORS_FILE))

    another = ProgressUpdate(
        "loading", "Waiting for another phi3-lsp process to make its 4-bit layers"
    )
    waiting = waiting_for_another_process(lambda update: report(update.message), stop, another)
    try:
        build_once(entry, make, _manifest(weights_dir), waiting=waiting)
    except OSError as error:
        if making and not made:
            raise  # the checkpoint could not be read: not the cache's fault
        # A full or read-only disk costs the next load time, nothing else.
        log.warning("Could not keep the 4-bit layers in %s: %s", entry, error)
    else:
        if made:
            made.clear()  # before the read: the two would not fit beside each other everywhere
            # Cached as written, the layers would be read in 4 KB pages.
            cache_again_in_large_pages(entry / TENSORS_FILE)
    return made[0] if made else None


def _made(
    load_checkpoint: Callable[[], nn.Module],
    weights_dir: Path,
    report: Callable[[str], None],
    shapes: Callable[[], nn.Module],
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The model in its int4 form, and its `int4_tensors`: made from the files one weight at a
    time where they allow it (see `checkpoint_int4`), else from the loaded model."""
    stored = int4_tensors_from_files(shapes(), weights_dir)
    if stored is not None:
        report("Storing it in 4 bits, one weight at a time (once: later loads read the cache)")
        log.info("Made %d 4-bit tensors from the files of %s", len(stored), weights_dir)
        model = load_checkpoint()
        quantize_to_int4(model, stored)
        return model, stored
    model = load_checkpoint()
    report("Storing it in 4 bits (once: later loads read the cache)")
    layers = quantize_to_int4(model)
    log.info("Stored %d linear layers in 4 bits", layers)
    return model, int4_tensors(model)


def _manifest(weights_dir: Path) -> dict[str, object]:
    return {
        "weights": str(weights_dir.resolve()),
        "device": folder_device(weights_dir),
        "torch": torch.__version__,
        "cpu": _cpu_code_path(),
    }


def _remove_superseded(entry: Path) -> None:
    """Delete the other entries on this CPU code path for the same checkpoint folder, and for
    checkpoint folders that no longer exist: those of this torch version; those of another
    unread for `UNREAD_FOR_SECONDS`, or for `READING_SECONDS` where their checkpoint folder
    no longer exists.

    They were made for an earlier state of the checkpoint, another format version, a torch
    since upgraded, or a checkpoint since deleted, so nothing reads them again (Phi-3-mini:
    2.3 GB each). Entries for other CPU code paths stay: a cache folder shared by several
    machines uses them; so do another torch install's while it reads them.
    """
    cpu, torch_version = _cpu_code_path(), str(torch.__version__)

    def superseded(other: Path, manifest: dict[str, Any]) -> bool:
        if manifest.get("cpu", cpu) != cpu:  # entries made before 6e3ba0e have no "cpu"
            return False
        if manifest.get("torch") == torch_version or _unread_for(other, UNREAD_FOR_SECONDS):
            return True
        # Another torch install reads them no more: each of its loads reads the checkpoint.
        return source_deleted(manifest, "weights") and _unread_for(other, READING_SECONDS)

    remove_superseded(entry, "weights", applies=superseded)


def _mark_read(entry: Path) -> None:
    """Record that `entry` is read now, for another torch install's tidy-up (see
    `_remove_superseded`)."""
    with contextlib.suppress(OSError):  # a cache it cannot write: it is only not marked
        os.utime(entry)


def _unread_for(entry: Path, seconds: float) -> bool:
    """Whether `entry` was neither made nor read in the last `seconds`."""
    try:
        return time.time() - entry.stat().st_mtime > seconds
    except OSError:  # gone meanwhile, or not ours to look at
        return False


def int4_entry(weights_dir: Path) -> Path:
    """The cache folder for the 4-bit layers of the checkpoint in `weights_dir`."""
    # torch packs 4-bit codes in a layout of the CPU code it runs (AVX2, AVX-512, ...): layers
    # packed for another would multiply wrongly, without any error.
    parts = [
        f"format {FORMAT_VERSION}",
        f"torch {torch.__version__}",
        f"cpu {_cpu_code_path()}",
    ]
    for file in sorted(weights_dir.glob("*.safetensors")):
        stat = file.stat()
        parts.append(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
    return cache_dir() / "int4" / f"{weights_dir.name}-{key}"


def _cpu_code_path() -> str:
    return str(torch.backends.cpu.get_cpu_capability())
