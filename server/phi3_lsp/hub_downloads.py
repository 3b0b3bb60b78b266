"""The Hugging Face hub's cache and downloads, as `sources` uses them: a repo's snapshot folder
from the cache alone, or once the files it wants are downloaded, with the download's progress
reported instead of drawn on stderr. A download given a `LoadStop` runs on a thread of its own
and can be left at once (see `load_stops`), and is stopped, over HTTP and from Xet storage."""

from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi3_lsp.load_stops import LoadStop, LoadStopped
from phi3_lsp.progress import ProgressCallback, ProgressUpdate

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoSibling

log = logging.getLogger(__name__)

HUB_ANSWER_SECONDS = 5.0
"""How long a download waits for the hub's answer about a file, or about the repo's files."""
ABANDONED_AFTER_SECONDS = 600.0
"""A download's partial file unchanged for this long is taken to be abandoned."""


def cached_snapshot(repo_id: str, patterns: list[str]) -> Path | None:
    """The repo's folder in the hub cache, without asking the hub; None where huggingface_hub
    finds none, or knows it misses files that `patterns` match."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:  # its IncompleteSnapshotError too
        return None


def downloaded_snapshot(
    repo_id: str,
    patterns: list[str],
    report: ProgressCallback,
    *,
    downloading: str,
    unreachable: str,
    stop: LoadStop | None = None,
) -> tuple[Path | None, str]:
    """The repo's folder once the files that `patterns` match are downloaded, reported as
    `downloading`; else (None, why), `unreachable` where the hub cannot be reached.

    Where the hub cannot be reached, huggingface_hub may return the cached folder as it is.
    Raises `LoadStopped` as soon as `stop` is set: the download ends, over HTTP at its next
    read, from Xet storage before this returns, and deletes the file it was writing
    (huggingface_hub moves a file into the cache only whole).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    def download() -> str:
        bars = _progress_bar(report, downloading, stop, _bytes_to_download(repo_id, patterns))
        folder = snapshot_download(
            repo_id,
            allow_patterns=patterns,
            etag_timeout=HUB_ANSWER_SECONDS,
            tqdm_class=bars,
        )
        bars.finished()
        return folder

    try:
        # A download waits on the network where nothing can interrupt it: on a thread of its
        # own, it holds up nobody once stopped (Phi-3-mini's weights take many minutes).
        folder = download() if stop is None else stop.result_of(download, name="phi3-download")
    except LoadStopped:
        _stop_xet_downloads()
        raise
    except LocalEntryNotFoundError as error:
        # What the hub's client raises when it cannot connect; and, where the cache holds part
        # of the repo, also when the hub answered that it has no such repo, or not for this
        # user: that answer is then the cause.
        answer = error.__cause__
        return None, _one_line(answer) if isinstance(answer, HfHubHTTPError) else unreachable
    except Exception as error:  # auth and missing-repo errors also mean "not available"
        return None, _one_line(error)
    return Path(folder), ""


def _bytes_to_download(repo_id: str, patterns: list[str]) -> int | None:
    """The bytes of the repo's files that `patterns` match and the hub cache lacks, as the hub
    lists them; None where it lists no sizes, or cannot be asked.

    One request more than huggingface_hub makes: the file list it asks for has no sizes (1.x),
    or is kept where it is not ours to read before the download starts (2.x).
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import filter_repo_objects  # type: ignore[attr-defined]

    try:
        info = HfApi().model_info(
            repo_id,
            revision=constants.DEFAULT_REVISION,
            files_metadata=True,
            timeout=HUB_ANSWER_SECONDS,  # a hub that does not answer costs the download no more
        )
    except Exception as error:  # the download asks again, and says what is wrong
        log.debug("No file sizes for %s (%s)", repo_id, _one_line(error))
        return None
    files = {file.rfilename: file for file in info.siblings or []}
    to_download = [
        files[name].size
        for name in filter_repo_objects(files, allow_patterns=patterns)
        if not _is_cached(repo_id, files[name], info.sha)
    ]
    known = [size for size in to_download if size is not None]
    return sum(known) if len(known) == len(to_download) else None


def _is_cached(repo_id: str, file: RepoSibling, commit: str | None) -> bool:
    """Whether huggingface_hub takes `file` of `commit` from the hub cache instead of
    downloading it: from that commit's snapshot, or from the repo's blobs, where its content
    came with another commit (it links the blob, named by the file's etag)."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    if isinstance(try_to_load_from_cache(repo_id, file.rfilename, revision=commit), str):
        return True
    # The etag huggingface_hub names the blob by: the content's sha256 for a file kept in LFS
    # (the hub's X-Linked-Etag), else its git blob id (the hub's ETag).
    etag = file.lfs.sha256 if file.lfs is not None else file.blob_id
    repo_folder = repo_folder_name(repo_id=repo_id, repo_type="model")
    blobs = Path(constants.HF_HUB_CACHE) / repo_folder / "blobs"
    return etag is not None and (blobs / etag).is_file()


def delete_abandoned_parts() -> None:
    """Delete the partial files that downloads left in the hub cache, of any model, when their
    process was killed (a server killed by its editor, a crash): up to a whole weights file
    each, which nothing else would ever delete, huggingface_hub naming each download's part
    anew, and which stay for good where that model is not downloaded again. A part is left
    alone while a download holds its file's lock (huggingface_hub holds it for the whole
    download), or when it was written to in the last `ABANDONED_AFTER_SECONDS` (a lock that a
    shared file system does not honour). Never raises: what cannot be deleted is logged."""
    from filelock import FileLock, Timeout
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    for part in cache.glob("models--*/blobs/*.incomplete"):
        etag = part.name.split(".", 1)[0]  # huggingface_hub's `<etag>.<random>.incomplete`
        lock = cache / ".locks" / part.parent.parent.name / f"{etag}.lock"
        try:
            if time.time() - part.stat().st_mtime < ABANDONED_AFTER_SECONDS:
                continue
            with FileLock(lock, timeout=0, mode=0o664):  # as huggingface_hub makes it
                part.unlink(missing_ok=True)
        except (Timeout, FileNotFoundError):
            continue  # being downloaded, or whole since
        except OSError as error:  # not ours to delete, say: the load goes on
            log.info("Could not delete %s, left by a download (%s)", part, _one_line(error))
            continue
        log.info("Deleted %s, left by a download that was cut short", part)


def _stop_xet_downloads() -> None:
    """Stop the downloads from the hub's Xet storage (where the hub keeps large files): they run
    in hf_xet's threads, which do not stop for an error raised in a progress report as
    huggingface_hub's HTTP downloads do, and would run on to their end (7.6 GB).

    Aborts the process's Xet session: huggingface_hub deletes each file it was writing and
    starts a new session for the next download. Only stopped loads can be downloading here:
    loads take turns on the model thread, and the next one starts after this returns.
    """
    try:
        from huggingface_hub.utils._xet import abort_xet_session
    except ImportError:  # a huggingface_hub without Xet storage downloads over HTTP alone
        return
    abort_xet_session()  # type: ignore[no-untyped-call]


def _one_line(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else error}"


def _progress_bar(
    report: ProgressCallback, message: str, stop: LoadStop | None, whole: int | None
) -> Any:
    """A tqdm class that reports a hub download's progress to `report` as `message`, instead of
    drawing bars on stderr (the server's log), and raises `LoadStopped` in the download's HTTP
    workers once `stop` is set; its `finished` says the download has ended.

    Only the bars that count bytes say how far it is, and their total grows as each file
    starts: huggingface_hub downloads 8 files at a time, so a download of more would near 100 %
    on its first 8. The percentage is of `whole`, the bytes to download where known (or of
    their total where larger: the repo may have changed since); it only goes up, once per
    percent (a 7.6 GB download updates them ~1,500 times), and reaches 100 once it has ended.
    """
    from tqdm.auto import tqdm

    lock = threading.Lock()
    reported = -1

    def reached(percent: int) -> None:
        nonlocal reported
        with lock:
            if percent <= reported:
                return
            reported = percent
        report(ProgressUpdate("fetching", message, percent / 100))

    class ForwardingBar(tqdm):  # type: ignore[misc, type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "file": _DISCARDED})

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            # Also as a file starts (its size added to the total): after a stop, a file whose
            # download would start in the Xet session made anew does not.
            if stop is not None and _stops_the_download_here():
                stop.check()
            super().refresh(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if stop is not None and _stops_the_download_here():
                stop.check()  # huggingface_hub then deletes the partial file and cancels the rest
            shown: bool | None = super().update(n)
            if self.unit == "B" and self.total:
                # 99 at most: where `whole` falls short, the last bytes are yet to come.
                reached(min(99, int(100 * self.n / max(self.total, whole or 0))))
            return shown

        @staticmethod
        def finished() -> None:
            if reported >= 0:  # else nothing was downloaded
                reached(100)

    return ForwardingBar


def _stops_the_download_here() -> bool:
    """Whether an error raised on this thread stops the download: on its workers, not on
    hf_xet's threads, which print it to stderr and go on (Python knows them only as dummy
    threads), nor on tqdm's monitor thread, which redraws every bar now and then."""
    from tqdm._monitor import TMonitor

    return not isinstance(threading.current_thread(), threading._DummyThread | TMonitor)


class _Discarded(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


_DISCARDED = _Discarded()
