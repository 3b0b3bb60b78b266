"""The phi3-lsp language server: a pygls LanguageServer that holds one model.

Handlers live in `features/`; this module owns the server's state (settings, the model host,
the suggestion cache) and thread-safe sending; `launch` starts it. Importing it does not import
torch: the model loads after `initialize`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, TypeVar, cast

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.io_ import run_async
from pygls.lsp.server import LanguageServer
from pygls.protocol import default_converter

from phi3_lsp import __version__
from phi3_lsp.logs import ClientLogHandler, attach_client_handler
from phi3_lsp.message_reader import MessageReader
from phi3_lsp.message_writer import MessageWriter
from phi3_lsp.model_host import HostListener, ModelHost
from phi3_lsp.model_thread import ModelThread
from phi3_lsp.positions import Encoding
from phi3_lsp.protocol_warmup import warm_up
from phi3_lsp.request_rules import (
    RequestRulesProtocol,
    UnreadableMessageTracebacks,
    is_unreadable,
)
from phi3_lsp.settings import DEFAULT_MODEL, Settings, describe_changes
from phi3_lsp.settings_warnings import ShownWarnings
from phi3_lsp.strict_params import read_strictly
from phi3_lsp.suggestions import SuggestionCache
from phi3_lsp.text_documents import SYNC_KIND, IndexedWorkspace, encoding_named

logger = logging.getLogger(__name__)
# What pygls' message loop logs: a body that is not JSON is answered, not a traceback.
_message_loop_logger = logging.getLogger(f"{__name__}.messages")
_message_loop_logger.addFilter(UnreadableMessageTracebacks())

STATUS_NOTIFICATION = "phi3/status"
ASIDE_END_SECONDS = 0.1
"""How long the exit waits for the thread of work aside to end, when it has nothing to do."""
_T = TypeVar("_T")
_LOG_TYPES = [
    (logging.ERROR, types.MessageType.Error),
    (logging.WARNING, types.MessageType.Warning),
    (logging.INFO, types.MessageType.Info),
]


class Phi3LanguageServer(LanguageServer):
    """The server's state: settings, the model host and the last suggestion."""

    def __init__(self, default_model: str = DEFAULT_MODEL) -> None:
        converter = default_converter()  # type: ignore[no-untyped-call]  # unannotated in pygls
        read_strictly(converter)
        super().__init__(
            "phi3-lsp",
            __version__,
            text_document_sync_kind=SYNC_KIND,
            protocol_cls=RequestRulesProtocol,
            converter_factory=lambda: converter,
        )
        self.converter = converter
        """What reads and writes the protocol's messages (pygls' default)."""
        self.defaults = Settings(model=default_model)
        self.settings = self.defaults
        self.suggestions = SuggestionCache()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.host: ModelHost | None = None
        self._detach_log_handler: Callable[[], None] | None = None
        self._message_reader: MessageReader | None = None
        self._settings_reads: set[asyncio.Future[None]] = set()
        self._warnings = ShownWarnings()
        self._status_changed = asyncio.Event()
        self._aside: ModelThread | None = None
        """Runs work beside the model thread's (see `run_aside`), once there is some."""
        self.exit_code = 0
        """The process's, once the client said exit (see `start_io`)."""

    # --- start-up ------------------------------------------------------------------------

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve on stdio until the client says exit."""
        self.protocol.set_writer(MessageWriter(stdout or sys.stdout.buffer))
        with contextlib.suppress(KeyboardInterrupt):
            self._serve(stdin or sys.stdin.buffer)

    def start_tcp(self, host: str, port: int) -> None:
        """Serve the first client to connect to `host`:`port` until it says exit, its messages
        read as on stdio: pygls' own TCP loop stopped hearing the client after a header block
        without a usable Content-Length (see `message_frames`)."""
        # The host's own address family: "::1" is IPv6, which the default (IPv4) cannot bind.
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((host, port), family=family) as listener:
            logger.info("Serving on %s:%d", host, port)
            # One session, as with pygls' server, which ended with its first client's.
            connection, _ = listener.accept()
        with connection, connection.makefile("rb") as received:
            writer = MessageWriter(connection.makefile("wb"))
            self.protocol.set_writer(writer)
            try:
                self._serve(received)
            finally:
                writer.close()
                with contextlib.suppress(OSError):  # the client closed it first
                    connection.shutdown(socket.SHUT_RDWR)  # ends the reader's wait for more

    def _serve(self, received: BinaryIO) -> None:
        """pygls' message loop over `received`, read by `MessageReader`, until the client says
        exit or closes the connection."""
        # pygls' `shutdown` ends its message loop through this event.
        self._stop_event = stop_event = threading.Event()
        try:
            asyncio.run(self._serve_messages(received, stop_event))
        except SystemExit as exit:  # pygls answers `exit` with it: 1 unless `shutdown` came first
            self.exit_code = exit.code if isinstance(exit.code, int) else 0
        finally:
            self.shutdown()  # type: ignore[no-untyped-call]  # unannotated in pygls

    async def _serve_messages(self, received: BinaryIO, stop_event: threading.Event) -> None:
        self._message_reader = MessageReader(received, asyncio.get_running_loop())
        self._message_reader.start()
        await run_async(
            stop_event=stop_event,
            reader=self._message_reader,
            protocol=self.protocol,
            logger=_message_loop_logger,
            error_handler=self._message_failed,
        )

    def _message_failed(self, error: Exception, source: type[JsonRpcException]) -> None:
        """A message pygls could not handle: one that is not JSON is answered as JSON-RPC says;
        the rest go to pygls' report (an "Error in server" message)."""
        if is_unreadable(error):
            cast(RequestRulesProtocol, self.protocol).answer_unreadable(cast(ValueError, error))
        else:
            self.report_server_error(error, source)

    def attach_loop(self, listener: HostListener) -> None:
        """Bind to the running event loop and create the model host (on `initialize`)."""
        self._loop = asyncio.get_running_loop()
        self.host = ModelHost(listener, self.settings.model)
        if self._detach_log_handler is None:
            self._detach_log_handler = attach_client_handler(ClientLogHandler(self.send_log))

    def warm_up_protocol(self) -> None:
        """Pay the first reading of each message of typing now, not on the first keystroke."""
        warm_up(self.converter)

    def index_documents(self) -> None:
        """Keep open documents as `IndexedDocument`s (call on `initialize`, before any is open).

        pygls makes its workspace at `initialize` and has no option for the document class.
        """
        workspace = self.workspace
        self.protocol._workspace = IndexedWorkspace(
            workspace.root_uri, list(workspace.folders.values()), workspace.position_encoding
        )

    def forget_document(self, uri: str) -> None:
        """Let go of everything kept for `uri` (its text too, unlike a close, where pygls does)."""
        self.workspace.remove_text_document(uri)
        self.suggestions.forget_document(uri)
        if self.host is not None:
            self.host.forget_document(uri)

    @contextlib.contextmanager
    def reading_settings(self) -> Iterator[None]:
        """Mark settings the client has announced as on their way (see `settled_settings`)."""
        read: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settings_reads.add(read)
        try:
            yield
        finally:
            self._settings_reads.discard(read)
            read.set_result(None)

    def status_sent(self) -> None:
        """Wake what waits for the model's status to change (call on the event loop)."""
        changed, self._status_changed = self._status_changed, asyncio.Event()
        changed.set()

    async def load_settled(self, or_once: Callable[[], bool] = lambda: False) -> None:
        """Return once no model is loading: it loaded (with or without weights), or failed;
        or once `or_once()`, checked as the model's status changes."""
        while self.host is not None and self.host.status.state == "loading" and not or_once():
            await self._status_changed.wait()

    async def settled_settings(self) -> Settings:
        """The settings, once those announced before now are read: a request sent after a
        change the client announced uses it, even while the server still asks for it."""
        if self._settings_reads:
            await asyncio.wait(list(self._settings_reads))
        return self.settings

    def apply_settings(
        self, settings: Settings, problems: Sequence[str] | None, unread: Sequence[str] = ()
    ) -> None:
        """Use `settings` from now on: report `problems` (those of the `phi3` section's values;
        None when the change brought no section) and `unread` (settings sent outside it), and
        reload the model if it changed.

        A problem already reported is not shown again while it stays: a bad value stays in the
        client's settings while the user changes others (see `ShownWarnings`).
        """
        new_problems = self._warnings.not_shown(problems, unread)
        if new_problems:
            self.show_message(
                types.MessageType.Warning, "phi3-lsp settings: " + " ".join(new_problems)
            )
        for problem in new_problems:
            logger.warning("Setting not taken: %s", problem)  # the toast goes; the output stays
        for change in describe_changes(self.settings, settings):
            logger.info("Setting changed: %s", change)  # the output shows what took effect
        turned_off = self.settings.inline_completions and not settings.inline_completions
        if self.settings.shapes_suggestions_unlike(settings) or turned_off:
            # Asking again at its place makes the new one. A suggestion stopped by turning
            # completions off is cut short: typing through it once they are on must not show it.
            self.suggestions.forget()
        previous, self.settings = self.settings, settings
        if self.host is None:
            return
        # Turned off, no suggestion is shown: its work is for no one, and neither is work ahead
        # of completions (a prompt read at the cursor, the warm-up: it runs again once they are
        # on).
        self.host.use_completions(settings.inline_completions)
        if not turned_off and settings.max_new_tokens < previous.max_new_tokens:
            self.host.limit_new_tokens(settings.max_new_tokens)
        reloading = self.host.load(
            settings.model,
            threads=settings.threads,
            weights=settings.weights,
            int4_drafts=settings.int4_drafts,
            trust_remote_code=settings.trust_remote_code,
        )
        if reloading:
            self.suggestions.forget()

    # --- sending, from any thread --------------------------------------------------------

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the event loop: pygls' writer is not thread-safe."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # The loop may close while the server exits: nobody is listening then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback)

    def show_message(self, kind: types.MessageType, message: str) -> None:
        """`window/showMessage` from any thread."""
        params = types.ShowMessageParams(type=kind, message=message)
        self.call_soon(lambda: self.window_show_message(params))

    def send_log(self, level: int, message: str) -> None:
        """`window/logMessage` from any thread (used by the logging handler)."""
        kind = next((kind for floor, kind in _LOG_TYPES if level >= floor), types.MessageType.Log)
        params = types.LogMessageParams(type=kind, message=message)
        self.call_soon(lambda: self.window_log_message(params))

    # --- client facts ---------------------------------------------------------------------

    @property
    def position_encoding(self) -> Encoding:
        """The code units that LSP positions count, as negotiated at `initialize`."""
        return encoding_named(self.workspace.position_encoding)

    def client_supports(self, path: str) -> bool:
        """True if the client's capabilities have a truthy value at dotted `path`."""
        value: object = self.client_capabilities
        for name in path.split("."):
            value = getattr(value, name, None)
            if value is None:
                return False
        return bool(value)

    def run_aside(self, work: Callable[[], _T]) -> asyncio.Future[_T]:
        """`work()`'s result, run on a daemon thread beside the model thread's work: the exit
        does not wait for it (asyncio's executor threads hold up the exit until they end, e.g.
        in torch's first import while a load does it too)."""
        if self._aside is None:
            self._aside = ModelThread(name="phi3-aside")
        return asyncio.wrap_future(self._aside.submit(work))

    def close(self) -> bool:
        """Stop the model thread's work and stop forwarding logs.

        False if a thread is still busy: the model thread in work it cannot leave (a load), the
        thread of work aside (see `run_aside`), or the stdin reader in a read that only the
        client's closing of stdin ends (a TCP session's reader ends with its connection).
        """
        idle = self.host.shutdown() if self.host is not None else True
        if self._aside is not None:
            self._aside.shutdown(wait=False)
            idle = self._aside.join(ASIDE_END_SECONDS) and idle
        if self._detach_log_handler is not None:
            self._detach_log_handler()
            self._detach_log_handler = None
        reading = self._message_reader is not None and self._message_reader.reading
        return idle and not reading


def build_server(default_model: str | None = None) -> Phi3LanguageServer:
    """A server with every feature registered."""
    from phi3_lsp.features import (
        commands,
        completion,
        configuration,
        dismiss_suggestion,
        documents,
        hover,
        inline_completion,
        read_at_cursor,
    )

    server = Phi3LanguageServer(default_model or DEFAULT_MODEL)
    features = (
        configuration,
        documents,
        inline_completion,
        completion,
        read_at_cursor,
        dismiss_suggestion,
        hover,
        commands,
    )
    for feature in features:
        feature.register(server)
    return server
