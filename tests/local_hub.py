"""A local server that answers as the Hugging Face hub does for snapshot downloads (the repo's
commit, its file list, each file), for tests of downloads on machines that cannot reach the hub.

The hub keeps large files in its Xet storage, which huggingface_hub downloads through hf_xet: with
`xet_store`, the weights are stored there by hf_xet itself, in its local storage (a folder
that its client reads as it reads the hub's), and the hub answers with their Xet hashes."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from hub_cache import COMMIT, WEIGHTS, blob_id, lfs_pointer, repo_files, sha256_of

HELD_BYTES = 1 << 20
"""What a held weights download keeps back until it is released."""


@dataclass
class LocalHub:
    """What the local hub serves and has sent; with `hold_weights`, the end of a weights file
    waits for `weights_released`, and `weights_asked` is set once such a file is asked for; with
    `hold_weights_after`, the weights files asked after that many wait whole for
    `weights_released`, `weights_held` released once for each."""

    repos: dict[str, Path]
    endpoint: str = ""
    sent: list[str] = field(default_factory=list)
    """`repo/file` of each file sent whole, in order."""
    hold_weights: bool = False
    weights_asked: threading.Event = field(default_factory=threading.Event)
    weights_released: threading.Event = field(default_factory=threading.Event)
    hold_weights_after: int | None = None
    weights_held: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    weights_files_asked: int = field(default=0, init=False)
    asking: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    xet_store: Path | None = None
    xet_hashes: dict[tuple[str, str], str] = field(default_factory=dict)
    """The Xet hash of each weights file, by repo id and name, where `xet_store` holds them."""

    def sent_matching(self, pattern: str) -> list[str]:
        """The files sent whose names match `pattern`."""
        return [path for path in self.sent if fnmatch(path.rsplit("/", 1)[1], pattern)]

    def holds_whole(self, file: Path) -> bool:
        """Whether `file`, asked for now, waits whole for `weights_released`."""
        if self.hold_weights_after is None or not fnmatch(file.name, WEIGHTS):
            return False
        with self.asking:
            self.weights_files_asked += 1
            return self.weights_files_asked > self.hold_weights_after


@contextmanager
def local_hub(
    repos: dict[str, Path],
    *,
    hold_weights: bool = False,
    hold_weights_after: int | None = None,
    xet_store: Path | None = None,
) -> Iterator[LocalHub]:
    """Serve `repos` (repo id → folder) on 127.0.0.1 as the hub's API and file downloads do;
    with `xet_store`, their weights from a Xet storage in that folder."""
    hub = LocalHub(
        repos,
        hold_weights=hold_weights,
        hold_weights_after=hold_weights_after,
        xet_store=xet_store,
    )
    if xet_store is not None:
        hub.xet_hashes = _stored_in_xet(repos, xet_store)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.weights_released.set()
        server.shutdown()
        server.server_close()


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class HubHandler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # the test's output is not the place

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, *, body: bool) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path).strip("/").split("/")
            if path[:2] == ["api", "models"] and len(path) >= 6:
                repo_id, kind = "/".join(path[2:4]), path[4]
                folder = hub.repos.get(repo_id)
                if folder is not None and kind == "revision":
                    sizes = "blobs" in parse_qs(url.query)
                    self._json(_repo_info(repo_id, folder, sizes=sizes), body)
                    return
                if folder is not None and kind == "tree":
                    self._json(_tree_entries(hub, repo_id, folder), body)
                    return
                if folder is not None and kind == "xet-read-token" and hub.xet_store is not None:
                    self._xet_token(hub.xet_store)
                    return
            elif len(path) >= 5 and path[2] == "resolve":
                repo_id, name = "/".join(path[:2]), "/".join(path[4:])
                folder = hub.repos.get(repo_id)
                if folder is not None and (folder / name).is_file():
                    self._file(repo_id, folder / name, body)
                    return
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _json(self, value: object, body: bool) -> None:
            data = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _file(self, repo_id: str, file: Path, body: bool) -> None:
            if body and hub.holds_whole(file):
                # Before its answer starts: huggingface_hub counts the file in its download then.
                hub.weights_held.release()
                hub.weights_released.wait()
            data = file.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{sha256_of(file)}"')
            self.send_header("Content-Length", str(len(data)))
            xet_hash = hub.xet_hashes.get((repo_id, file.name))
            if xet_hash is not None:
                self.send_header("X-Xet-Hash", xet_hash)
                self.send_header(
                    "X-Xet-Refresh-Route",
                    f"{hub.endpoint}/api/models/{repo_id}/xet-read-token/{COMMIT}",
                )
            self.end_headers()
            if not body:
                return
            try:
                if hub.hold_weights and fnmatch(file.name, WEIGHTS):
                    # huggingface_hub reads 10 MiB at a time: a file larger than that is seen in
                    # part, and its progress reported, before the rest waits.
                    sent_first = max(0, len(data) - HELD_BYTES)
                    self.wfile.write(data[:sent_first])
                    self.wfile.flush()
                    hub.weights_asked.set()
                    hub.weights_released.wait()
                    data = data[sent_first:]
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client stopped its download, as the hub sees it too
            hub.sent.append(f"{repo_id}/{file.name}")

        def _xet_token(self, store: Path) -> None:
            # Where hf_xet is to read, and with what token, as the hub's answer says.
            self.send_response(200)
            self.send_header("X-Xet-Cas-Url", f"local://{store}")
            self.send_header("X-Xet-Access-Token", "local")
            self.send_header("X-Xet-Token-Expiration", str(int(time.time()) + 3600))
            self.send_header("Content-Length", "0")
            self.end_headers()

    return HubHandler


def _repo_info(repo_id: str, folder: Path, *, sizes: bool) -> dict[str, object]:
    """The repo's commit and files, as the hub answers; with `sizes` (asked as `blobs`), each
    file's size, blob id, and LFS pointer (the weights)."""
    files: list[dict[str, object]] = []
    for file in repo_files(folder):
        entry: dict[str, object] = {"rfilename": file.name}
        if sizes:
            entry.update(size=file.stat().st_size, blobId=blob_id(file))
            if fnmatch(file.name, WEIGHTS):
                pointer = lfs_pointer(file)
                entry["lfs"] = {
                    "size": file.stat().st_size,
                    "sha256": sha256_of(file),
                    "pointerSize": len(pointer),
                }
        files.append(entry)
    return {"id": repo_id, "sha": COMMIT, "siblings": files}


def _tree_entries(hub: LocalHub, repo_id: str, folder: Path) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for file in repo_files(folder):
        entry: dict[str, object] = {
            "type": "file",
            "path": file.name,
            "size": file.stat().st_size,
            "oid": blob_id(file),
        }
        if fnmatch(file.name, WEIGHTS):
            size, pointer_size = file.stat().st_size, len(lfs_pointer(file))
            entry["lfs"] = {"oid": sha256_of(file), "size": size, "pointerSize": pointer_size}
        xet_hash = hub.xet_hashes.get((repo_id, file.name))
        if xet_hash is not None:
            entry["xetHash"] = xet_hash
        entries.append(entry)
    return entries


def _stored_in_xet(repos: dict[str, Path], store: Path) -> dict[tuple[str, str], str]:
    """Store the repos' weights in a Xet storage in `store`, as hf_xet uploads them."""
    from hf_xet import XetSession

    weights = [
        (repo_id, file)
        for repo_id, folder in repos.items()
        for file in repo_files(folder)
        if fnmatch(file.name, WEIGHTS)
    ]
    commit = XetSession().new_upload_commit(endpoint=f"local://{store}")
    uploads = [commit.start_upload_file(str(file)) for _, file in weights]
    commit.wait_to_finish()
    return {
        (repo_id, file.name): upload.result().xet_info.hash
        for (repo_id, file), upload in zip(weights, uploads, strict=True)
    }


def unreachable_endpoint() -> str:
    """An address on this machine where nothing answers, as the hub is for a machine without
    network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
