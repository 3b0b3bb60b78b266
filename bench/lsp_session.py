"""The real phi3-lsp server in a child process, driven over stdio like an editor drives it.

Every figure taken here is a client round trip on loopback stdio: it includes JSON-RPC framing
and two pipe hops, which the benchmark measures separately (a hover on a tiny document).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from bench.workload import peak_rss_kib, rss_kib
from phi3_lsp.json_values import as_plain

READ_AT_CURSOR = "phi3/readAtCursor"
CLIENT_CAPABILITIES = types.ClientCapabilities(
    text_document=types.TextDocumentClientCapabilities(
        synchronization=types.TextDocumentSyncClientCapabilities(),
        inline_completion=types.InlineCompletionClientCapabilities(),
        hover=types.HoverClientCapabilities(content_format=[types.MarkupKind.Markdown]),
    ),
    general=types.GeneralClientCapabilities(
        position_encodings=[types.PositionEncodingKind.Utf16],
    ),
)


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, the unit of LSP positions."""
    return len(text.encode("utf-16-le")) // 2


def end_position(text: str) -> types.Position:
    """The LSP position just after the last character of `text` (lines end with \\n)."""
    lines = text.split("\n")
    return types.Position(line=len(lines) - 1, character=utf16_length(lines[-1]))


def insert_text(text: str, at: types.Position, typed: str) -> str:
    """`text` with `typed` inserted at the LSP position `at` (UTF-16 columns)."""
    lines = text.split("\n")
    line = lines[at.line]
    index = len(line.encode("utf-16-le")[: at.character * 2].decode("utf-16-le"))
    lines[at.line] = line[:index] + typed + line[index:]
    return "\n".join(lines)


class ServerError(RuntimeError):
    """The server reported an error state or died."""


@dataclass(frozen=True)
class Completion:
    """One inline completion as the client saw it."""

    seconds: float
    text: str
    model_runs: int  # "generating" status notifications seen while the request was open
    status: dict[str, Any] | None  # `phi3.status` right after the answer (token count, speed)


class ServerSession:
    """One server process and its LanguageClient."""

    def __init__(self, client: LanguageClient, spawned_at: float) -> None:
        self.client = client
        self.spawned_at = spawned_at
        self.initialize_seconds = 0.0
        self.ready_seconds: float | None = None
        self.statuses: list[dict[str, Any]] = []
        self.generating_count = 0
        self.warnings: list[str] = []
        self._ready = asyncio.Event()
        self._outcome: dict[str, Any] | None = None
        self._versions: dict[str, int] = {}
        self._texts: dict[str, str] = {}
        self._stderr_task: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, command: list[str], initialization_options: Mapping[str, Any], stderr_log: Path
    ) -> ServerSession:
        """Spawn the server, send `initialize` + `initialized`; time spawn → initialize result."""
        client = LanguageClient("phi3-lsp-bench", "0.1.0")
        spawned_at = time.perf_counter()
        session = cls(client, spawned_at)

        # pygls tags the handler with attributes, which a bound method cannot take.
        def on_status(params: Any) -> None:
            session._on_status(params)

        client.feature("phi3/status")(on_status)
        messages_log = stderr_log.with_name(stderr_log.stem + ".messages")

        def on_message(params: Any) -> None:
            # Kept for the reader of the logs; a warning is also worth seeing during the run.
            with messages_log.open("a", encoding="utf-8") as sink:
                sink.write(f"{params.type}: {params.message}\n")
            if params.type <= types.MessageType.Warning:
                session.warnings.append(params.message)

        client.feature(types.WINDOW_LOG_MESSAGE)(on_message)
        client.feature(types.WINDOW_SHOW_MESSAGE)(on_message)
        await client.start_io(*command)
        session._stderr_task = asyncio.create_task(session._drain_stderr(stderr_log))
        await client.initialize_async(
            types.InitializeParams(
                capabilities=CLIENT_CAPABILITIES,
                process_id=os.getpid(),
                initialization_options=dict(initialization_options),
            )
        )
        session.initialize_seconds = time.perf_counter() - spawned_at
        client.initialized(types.InitializedParams())
        return session

    @property
    def pid(self) -> int:
        process = self.client._server  # pygls keeps the child process only here
        if process is None:
            raise ServerError("the server process is not running")
        return process.pid

    def peak_rss_kib(self) -> int | None:
        return peak_rss_kib(self.pid)

    def rss_kib(self) -> int | None:
        return rss_kib(self.pid)

    async def _drain_stderr(self, log: Path) -> None:
        # An unread stderr pipe fills at 64 KiB and then blocks the server mid-write.
        process = self.client._server
        if process is None or process.stderr is None:
            return
        with log.open("ab") as sink:
            while chunk := await process.stderr.read(65536):
                sink.write(chunk)

    def _on_status(self, params: Any) -> None:
        status = as_plain(params)
        self.statuses.append(status)
        state = status.get("state")
        if state == "generating":
            self.generating_count += 1
        # The load's outcome: ready (with its weights, or without them and a message saying
        # why), or an error.
        if state in ("ready", "error") and self._outcome is None:
            self._outcome = status
            self.ready_seconds = time.perf_counter() - self.spawned_at
            self._ready.set()

    async def wait_ready(self, timeout: float) -> float:
        """Seconds from spawn to the first `ready` status, which must have the weights loaded."""
        await asyncio.wait_for(self._ready.wait(), timeout)
        outcome = self._outcome or {}
        if self.ready_seconds is None or not outcome.get("weightsLoaded", False):
            raise ServerError(f"the server did not load the weights: {outcome.get('message')}")
        return self.ready_seconds

    async def configure(self, settings: Mapping[str, Any]) -> None:
        """Send `phi3` settings the way an editor does after the user changes them."""
        self.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"phi3": dict(settings)})
        )
        # A request after the notification guarantees the server has applied it.
        await self.command("phi3.status")

    async def command(self, name: str) -> Any:
        result = await self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=[])
        )
        return as_plain(result)

    def open(self, uri: str, text: str) -> None:
        self._versions[uri] = 1
        self._texts[uri] = text
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=text
                )
            )
        )

    def close(self, uri: str) -> None:
        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )
        del self._versions[uri], self._texts[uri]

    def text(self, uri: str) -> str:
        return self._texts[uri]

    def type_at_end(self, uri: str, typed: str) -> types.Position:
        """Append `typed` at the end of the document as one incremental edit; the new cursor."""
        at = end_position(self._texts[uri])
        self.insert(uri, at, typed)
        return end_position(self._texts[uri])

    def insert(self, uri: str, at: types.Position, typed: str) -> None:
        """Insert `typed` at `at` as one incremental edit, the way an editor reports a keystroke."""
        self._versions[uri] += 1
        self._texts[uri] = insert_text(self._texts[uri], at, typed)
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=uri, version=self._versions[uri]
                ),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=at, end=at), text=typed
                    )
                ],
            )
        )

    async def read_at_cursor(self, uri: str, position: types.Position) -> float:
        """Ask the server to read the prompt at `position` (`phi3/readAtCursor`), as an editor
        does when the cursor rests there; the seconds until it answered."""
        params = types.TextDocumentPositionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=position
        )
        begun = time.perf_counter()
        await self.client.protocol.send_request_async(READ_AT_CURSOR, params)
        return time.perf_counter() - begun

    async def complete(
        self, uri: str, position: types.Position, request_id: str | None = None
    ) -> Completion:
        """One inline completion request (automatic, as a pause in typing triggers it)."""
        runs_before = self.generating_count
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position,
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic
            ),
        )
        begun = time.perf_counter()
        result = await self.client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=request_id
        )
        seconds = time.perf_counter() - begun
        return Completion(
            seconds=seconds,
            text=_first_insert_text(result),
            model_runs=self.generating_count - runs_before,
            status=await self.command("phi3.status"),
        )

    async def wait_idle(self, timeout: float = 600.0) -> None:
        """Wait until no generation runs (one goes on behind an early answer)."""
        deadline = time.perf_counter() + timeout
        while (await self.command("phi3.status") or {}).get("state") == "generating":
            if time.perf_counter() > deadline:
                raise ServerError("the server kept generating past the wait")
            await asyncio.sleep(0.05)

    def cancel(self, request_id: str) -> None:
        """`$/cancelRequest`, as an editor sends it when the user types on."""
        self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=request_id))

    async def seconds_to_first_hover(self, poll_seconds: float = 0.05) -> float:
        """Seconds from spawn until a hover answers with tokens, polling a one-line document."""
        uri = "file:///bench/first-hover.txt"
        self.open(uri, "The capital of France is")
        params = types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(0, 5)
        )
        while await self.client.text_document_hover_async(params) is None:
            await asyncio.sleep(poll_seconds)
        answered = time.perf_counter() - self.spawned_at
        self.close(uri)
        return answered

    async def hover(self, uri: str, position: types.Position) -> float:
        """Seconds for one hover round trip."""
        begun = time.perf_counter()
        await self.client.text_document_hover_async(
            types.HoverParams(
                text_document=types.TextDocumentIdentifier(uri=uri), position=position
            )
        )
        return time.perf_counter() - begun

    async def shutdown(self) -> None:
        """shutdown + exit, then make sure the process is gone."""
        process = self.client._server
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.shutdown_async(None), 30)
            self.client.exit(None)
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.stop(), 10)  # type: ignore[no-untyped-call]
        if self._stderr_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr_task, 5)


def _first_insert_text(
    result: types.InlineCompletionList | Sequence[types.InlineCompletionItem] | None,
) -> str:
    items = result.items if isinstance(result, types.InlineCompletionList) else result or []
    if not items:
        return ""
    insert = items[0].insert_text
    return insert if isinstance(insert, str) else insert.value
