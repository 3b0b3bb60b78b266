"""The LSP session `phi3-lsp demo` runs: initialize, wait for the model, open a document, ask
for an inline completion at its end, hover a word, show the model's architecture and time a
read of its weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TextIO, TypeVar

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from phi3_lsp.features.commands import MEASURE_WEIGHT_READS, SHOW_ARCHITECTURE
from phi3_lsp.json_values import as_plain
from phi3_lsp.server import STATUS_NOTIFICATION

DEMO_TEXT = "The capital of France is"
DEMO_URI = "untitled:demo.txt"
HOVER_WORD = "capital"
_T = TypeVar("_T")


class ModelLoadFailed(Exception):
    """The server could not load the model; the message is the server's, with the fix."""


class ServerEnded(Exception):
    """The server's process ended before the demo did; the message says how, and when."""


class _ServerLog:
    """The server's stderr, held until its model has loaded or its process has ended, then shown.

    The log of a load that failed is left out: it repeats, with a traceback where the error
    was not foreseen, the one line the demo ends with."""

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self._held: list[str] = []
        self._state: Literal["held", "shown", "dropped"] = "held"
        self.shown_any = False
        """Whether any of the log was written out."""

    def write(self, text: str) -> None:
        if self._state == "shown":
            self._err.write(text)
            self.shown_any = self.shown_any or bool(text)
        elif self._state == "held":
            self._held.append(text)

    def show(self) -> None:
        """Write what was held, and the rest as it comes (unless it was dropped)."""
        if self._state == "held":
            self._state = "shown"
            self.write("".join(self._held))
            self._held.clear()

    def drop(self) -> None:
        """Leave out what was held, and the rest."""
        self._state = "dropped"
        self._held.clear()


class _Session:
    """What the server tells the demo between requests."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.status: dict[str, Any] = {}
        self.settled = asyncio.Event()
        self.idle = asyncio.Event()
        self.started = time.perf_counter()
        self.server_log = _ServerLog(err)
        self._last_line = ""

    def on_status(self, params: Any) -> None:
        self.status = _as_dict(params)
        state = self.status.get("state")
        message = self.status.get("message") or ""
        percentage = self.status.get("percentage")
        line = f"  [{self.elapsed():6.1f} s] {state}" + (f": {message}" if message else "")
        if percentage is not None:
            line += f" ({percentage} %)"
        if not self.settled.is_set():
            if state == "error":  # the demo's last line, on stderr (see `ModelLoadFailed`)
                self.server_log.drop()
            elif line != self._last_line:
                print(line, file=self.out, flush=True)
                self._last_line = line
            if state == "ready":
                self.server_log.show()
        if state in ("ready", "error"):
            self.settled.set()
        if state == "ready":
            self.idle.set()
        else:
            self.idle.clear()

    def on_message(self, params: types.ShowMessageParams) -> None:
        if params.type == types.MessageType.Error and not self.settled.is_set():
            return  # the load's error: the status that follows says it (see `on_status`)
        print(f"  server says: {params.message}", file=self.out, flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


async def demo(command: list[str], model: str, *, timeout: float, out: TextIO) -> int:
    """Drive the server started by `command` through the demo steps, printing as it goes.
    Raises `ModelLoadFailed` with the server's message when the model does not load, and
    `ServerEnded` when the server's process ends first."""
    session = _Session(out, sys.stderr)
    client = LanguageClient("phi3-lsp-demo", "1.0")
    # Plain functions: pygls marks handlers with attributes, which bound methods cannot carry.
    client.feature(STATUS_NOTIFICATION)(lambda params: session.on_status(params))
    client.feature(types.WINDOW_SHOW_MESSAGE)(lambda params: session.on_message(params))
    client.feature(types.WINDOW_LOG_MESSAGE)(lambda params: None)
    client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)(lambda params: None)
    client.feature(types.PROGRESS)(lambda params: None)

    print(f"Starting the server: {' '.join(command)}", file=out, flush=True)
    await client.start_io(*command)
    process = client._server  # pygls keeps the subprocess here and reads only its stdout
    assert process is not None  # start_io set it
    forwarder = asyncio.create_task(_forward_stderr(process, session.server_log))
    try:
        steps = _steps(client, session, model, timeout, out)
        return await _unless_it_ends(process, steps, session, model, forwarder)
    finally:
        await _stop(client, process)
        forwarder.cancel()
        session.server_log.show()  # a model that never settled: its log may say why


async def _forward_stderr(process: asyncio.subprocess.Process, log: _ServerLog) -> None:
    """Copy the server's stderr to `log`: unread, a full pipe would block the server's logging."""
    if process.stderr is None:
        return
    while line := await process.stderr.readline():
        log.write(line.decode(errors="replace"))


async def _unless_it_ends(
    process: asyncio.subprocess.Process,
    steps: Coroutine[Any, Any, int],
    session: _Session,
    model: str,
    forwarder: asyncio.Task[None],
) -> int:
    """What `steps` return, unless the server's process ends first (the out-of-memory killer,
    a crash): then its whole log is shown, and `ServerEnded` says how it ended."""
    running = asyncio.ensure_future(steps)
    ended = asyncio.ensure_future(process.wait())
    try:
        await asyncio.wait({running, ended}, return_when=asyncio.FIRST_COMPLETED)
        if process.returncode is None:
            return running.result()
    finally:
        running.cancel()  # the steps wait on a server that will not answer (or are done)
        ended.cancel()
    await asyncio.gather(running, return_exceptions=True)  # its requests failed with the exit
    # What it wrote last may say why: its stderr ends with it (or with its last child).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(forwarder, 5)
    session.server_log.show()
    when = "during the demo" if session.settled.is_set() else f"while loading {model}"
    log = "its log is above" if session.server_log.shown_any else "it wrote no log"
    message = f"The server {_how_it_ended(process.returncode)} {when}: {log}."
    if process.returncode == -signal.SIGKILL:
        message += (
            " The kernel's out-of-memory killer sends SIGKILL: free some memory, or try a "
            "smaller model."
        )
    raise ServerEnded(message)


def _how_it_ended(returncode: int) -> str:
    """'exited with code 3', or 'was killed by SIGKILL', from an asyncio process's returncode."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


async def _steps(
    client: LanguageClient, session: _Session, model: str, timeout: float, out: TextIO
) -> int:
    capabilities = types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities(),
            hover=types.HoverClientCapabilities(content_format=[types.MarkupKind.Markdown]),
        ),
    )
    params = types.InitializeParams(
        capabilities=capabilities, initialization_options={"phi3": {"model": model}}
    )
    result, seconds = await _timed(lambda: client.initialize_async(params))
    server = result.server_info
    name = f"{server.name} {server.version}" if server else "the server"
    print(
        f"initialize: {name} answered {seconds * 1000:.0f} ms after the process started",
        file=out,
    )
    client.initialized(types.InitializedParams())

    print(f"Loading {model}…", file=out, flush=True)
    try:
        await asyncio.wait_for(session.settled.wait(), timeout)
    except TimeoutError:
        raise ModelLoadFailed(
            f"{model} did not load within {timeout:g} s: give it more with --timeout."
        ) from None
    if session.status.get("state") == "error":
        raise ModelLoadFailed(session.status.get("message") or f"{model} could not load.")
    print(f"Model ready {session.elapsed():.1f} s after the process started", file=out)

    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=DEMO_URI, language_id="plaintext", version=1, text=DEMO_TEXT
            )
        )
    )
    print(f"\nDocument: {DEMO_TEXT!r}", file=out)
    await _inline_completion(client, session, out)
    await _hover(client, out)
    await _architecture(client, out)
    if session.status.get("weightsLoaded"):
        await _weight_reads(client, out)
    else:
        print("\nphi3.measureWeightReads: skipped, no weights are loaded", file=out)
    return 0


async def _inline_completion(client: LanguageClient, session: _Session, out: TextIO) -> None:
    shown, seconds = await _suggest(client, DEMO_TEXT)
    print(f"\ninline completion at the end ({seconds * 1000:.0f} ms):", file=out)
    if not shown:
        print("  (no suggestion)", file=out)
        return
    print(_styled(DEMO_TEXT, shown, out), file=out)
    # Accept it, as Tab does: the model went on in the background, so the rest is there.
    accepted = DEMO_TEXT + shown
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=DEMO_URI, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=accepted)],
        )
    )
    rest, seconds = await _suggest(client, accepted)
    print(f"\nafter accepting it, the rest ({seconds * 1000:.0f} ms):", file=out)
    print(_styled(accepted, rest, out) if rest else "  (nothing more)", file=out)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(session.idle.wait(), 60)
    status = session.status
    if status.get("lastTokens") is not None:
        print(
            f"  {status['lastTokens']} new tokens, {status.get('lastTokensPerSecond')} tokens/s "
            f"decode, {status.get('lastLatencyMs')} ms in the server",
            file=out,
        )


async def _suggest(client: LanguageClient, text: str) -> tuple[str, float]:
    """The inline suggestion at the end of the demo document, and how long it took."""
    lines = text.split("\n")
    end = types.Position(line=len(lines) - 1, character=len(lines[-1].encode("utf-16-le")) // 2)
    request = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=DEMO_URI),
        position=end,
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Invoked
        ),
    )
    answer, seconds = await _timed(lambda: client.text_document_inline_completion_async(request))
    items = answer.items if isinstance(answer, types.InlineCompletionList) else answer or []
    if not items:
        return "", seconds
    insert = items[0].insert_text
    return (insert if isinstance(insert, str) else insert.value), seconds


def _styled(before: str, suggestion: str, out: TextIO) -> str:
    """The suggestion as ghost text after the last line of `before` on a terminal; else quoted."""
    if out.isatty():
        return f"  {before.split(chr(10))[-1]}\x1b[2m{suggestion}\x1b[0m"
    return f"  {suggestion!r}"


async def _hover(client: LanguageClient, out: TextIO) -> None:
    position = types.Position(line=0, character=DEMO_TEXT.index(HOVER_WORD) + 1)
    request = types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=DEMO_URI), position=position
    )
    answer, seconds = await _timed(lambda: client.text_document_hover_async(request))
    print(f"\nhover over {HOVER_WORD!r} ({seconds * 1000:.0f} ms):", file=out)
    if answer is None:
        print("  (nothing)", file=out)
        return
    contents = answer.contents
    value = contents.value if isinstance(contents, types.MarkupContent) else str(contents)
    for line in value.strip().splitlines():
        print(f"  {line}", file=out)


async def _architecture(client: LanguageClient, out: TextIO) -> None:
    request = types.ExecuteCommandParams(command=SHOW_ARCHITECTURE)
    answer, seconds = await _timed(lambda: client.workspace_execute_command_async(request))
    report = _as_dict(answer)
    config = _as_dict(report.get("config", {}))
    parameters = _as_dict(report.get("parameters", {}))
    print(f"\nphi3.showArchitecture ({seconds * 1000:.0f} ms):", file=out)
    print(
        f"  {report.get('className')}: {config.get('layers')} layers, hidden "
        f"{config.get('hiddenSize')}, vocabulary {config.get('vocabSize')}, "
        f"{parameters.get('total', 0):,} parameters, weights loaded: {report.get('weightsLoaded')}",
        file=out,
    )
    lines = str(report.get("repr", "")).splitlines()
    for line in lines[:12]:
        print(f"  {line}", file=out)
    if len(lines) > 12:
        print(f"  … ({len(lines) - 12} more lines)", file=out)


async def _weight_reads(client: LanguageClient, out: TextIO) -> None:
    request = types.ExecuteCommandParams(command=MEASURE_WEIGHT_READS)
    answer, seconds = await _timed(lambda: client.workspace_execute_command_async(request))
    reads = _as_dict(answer)
    gigabytes, speed = reads.get("bytesRead", 0) / 1e9, reads.get("bytesPerSecond", 0) / 1e9
    print(f"\nphi3.measureWeightReads ({seconds * 1000:.0f} ms):", file=out)
    print(
        f"  {gigabytes:.2f} GB of weights read in {reads.get('seconds', 0) * 1000:.1f} ms "
        f"({speed:.1f} GB/s): the least time a decode pass can take here",
        file=out,
    )


async def _timed(call: Callable[[], Awaitable[_T]]) -> tuple[_T, float]:
    started = time.perf_counter()
    result = await call()
    return result, time.perf_counter() - started


async def _stop(client: LanguageClient, process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:  # an ended server would leave the shutdown unanswered
        try:
            await asyncio.wait_for(client.shutdown_async(None), 10)
            client.exit(None)
        except Exception as error:
            print(f"(the server did not shut down cleanly: {error})", file=sys.stderr)
    await client.stop()  # type: ignore[no-untyped-call]


def _as_dict(value: Any) -> dict[str, Any]:
    """A JSON object as a dict: pygls hands unknown objects over as named tuples."""
    plain = as_plain(value)
    return plain if isinstance(plain, dict) else {}
