"""A pytest-lsp session with the real server (`python -m phi3_lsp`) as a subprocess over stdio
(or over TCP, see `start_over_tcp`).

Each server runs with an empty, offline HF_HOME (unless a test gives it a hub to ask), so the
default model resolves to the offline pack's Phi-3 tokenizer and config, and `smollm2-135m` to
the pack's SmolLM2 weights in the usual phi3-lsp cache (built once, reused by every run).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, register_lsp_features
from pytest_lsp.client import progress as record_progress

from phi3_lsp.json_values import as_plain

STATUS = "phi3/status"
READ_AT_CURSOR = "phi3/readAtCursor"
DISMISS_SUGGESTION = "phi3/dismissSuggestion"
LOAD_TIMEOUT = 600.0
"""Seconds a model may take to load: SmolLM2 from the cache takes a few on a quiet machine."""
ANSWER_TIMEOUT = 300.0
SMOLLM2_MAX_NEW_TOKENS = 16
# Short continuations (the tests need their start; CPU time is shared), each answered whole so
# that answers do not depend on how fast the machine is.
SMOLLM2_SETTINGS: dict[str, Any] = {"maxNewTokens": SMOLLM2_MAX_NEW_TOKENS, "answerBudgetMs": 0}


class Phi3Client(LanguageClient):
    """pytest-lsp's client, also keeping every `phi3/status` the server sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statuses: list[dict[str, Any]] = []
        self._status_changed = asyncio.Event()
        self._progress_came = asyncio.Event()
        self.progress_creates: list[float] = []
        """When each `window/workDoneProgress/create` came (`time.monotonic()`)."""
        self.progress_creates_answered = asyncio.Event()
        """Set: progress creates are answered at once; cleared: each waits until it is set."""
        self.progress_creates_answered.set()
        self.tcp_server: asyncio.subprocess.Process | None = None
        """The server this client reached over TCP (see `start_over_tcp`)."""
        self.answer_creates_after_a_status = False
        """True: each progress create is answered once a status has come after it."""
        self.configuration_pulled = asyncio.Event()
        self.pull_answers: list[Callable[[], Awaitable[None]]] = []
        """How the next pulls are answered, oldest first: each is awaited before its answer
        (it may sleep, or raise to answer with an error). Empty: answered at once."""
        self.pull_results: list[Any] = []
        """What the next pulls are answered with in place of the settings, oldest first: a
        client's bug, such as null or an object where the protocol has an array."""

    def get_configuration(
        self, *, section: str | None = None, scope_uri: str | None = None
    ) -> Any | None:
        """Answer a `workspace/configuration` pull, and note that the server asked."""
        self.configuration_pulled.set()
        return super().get_configuration(section=section, scope_uri=scope_uri)

    def announce_settings(self, settings: dict[str, Any]) -> None:
        """Change the `phi3` settings as VS Code does: the server is told, then asks for them."""
        self.set_configuration({"phi3": settings})
        self.configuration_pulled.clear()
        self.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))

    async def change_settings(self, settings: dict[str, Any]) -> None:
        """`announce_settings`, then wait until the server has asked for them."""
        self.announce_settings(settings)
        await asyncio.wait_for(self.configuration_pulled.wait(), ANSWER_TIMEOUT)

    def generations_since(self, index: int) -> int:
        """How many generations began after the first `index` statuses."""
        return sum(status["state"] == "generating" for status in self.statuses[index:])

    def finished_generations_since(self, index: int) -> int:
        """How many generations ran to their end after the first `index` statuses: a finished
        one reports its figures; a stopped one only goes back to "ready"."""
        figures = ("lastLatencyMs", "lastTokens", "lastDecodeMs", "lastDecodePasses")
        statuses = self.statuses[max(0, index - 1) :]
        return sum(
            later["state"] == "ready" and any(later[key] != earlier[key] for key in figures)
            for earlier, later in itertools.pairwise(statuses)
        )

    def add_status(self, params: Any) -> None:
        self.statuses.append(as_plain(params))
        self._status_changed.set()

    async def wait_for_status(
        self, accept: Callable[[dict[str, Any]], bool], *, after: int = 0
    ) -> dict[str, Any]:
        """The first status at index ≥ `after` that `accept`s, waiting for it if needed."""

        async def scan() -> dict[str, Any]:
            seen = after
            while True:
                for status in self.statuses[seen:]:
                    if accept(status):
                        return status
                seen = max(seen, len(self.statuses))
                self._status_changed.clear()
                await self._status_changed.wait()

        return await asyncio.wait_for(scan(), LOAD_TIMEOUT)

    def add_progress(self, params: types.ProgressParams) -> None:
        record_progress(self, params)  # into `progress_reports`, as pytest-lsp keeps them
        self._progress_came.set()

    async def wait_for_progress(
        self,
        accept: Callable[[types.ProgressToken, Any], bool],
        *,
        skip: Collection[types.ProgressToken] = (),
    ) -> tuple[types.ProgressToken, Any]:
        """The first progress report (begin, report or end) that `accept`s, with its token,
        of the progresses whose tokens are not in `skip`; waiting for it if needed."""

        async def scan() -> tuple[types.ProgressToken, Any]:
            while True:
                for token, reports in list(self.progress_reports.items()):
                    if token in skip:
                        continue
                    for report in reports:
                        if accept(token, report):
                            return token, report
                self._progress_came.clear()
                await self._progress_came.wait()

        return await asyncio.wait_for(scan(), LOAD_TIMEOUT)

    def open_text(self, name: str, text: str, version: int = 1) -> str:
        """Open an in-memory document; returns its URI."""
        uri = f"untitled:{name}"
        self.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="plaintext", version=version, text=text
                )
            )
        )
        return uri

    def replace_text(self, uri: str, text: str, version: int) -> None:
        """Send the whole new text of an open document."""
        self.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
            )
        )

    async def inline(
        self,
        uri: str,
        line: int,
        character: int,
        *,
        msg_id: str | None = None,
        selected: types.SelectedCompletionInfo | None = None,
    ) -> list[types.InlineCompletionItem]:
        """The inline completion items at a position (`selected`: the item selected in the
        client's completion list, as VS Code sends it while the list is open)."""
        params = inline_params(uri, line, character, selected)
        answer = await asyncio.wait_for(
            self.protocol.send_request_async(  # type: ignore[no-untyped-call]
                types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id
            ),
            ANSWER_TIMEOUT,
        )
        if isinstance(answer, types.InlineCompletionList):
            return list(answer.items)
        return list(answer or [])

    async def read_at_cursor(self, uri: str, line: int, character: int) -> Any:
        """Ask the server to read the prompt at a position (`phi3/readAtCursor`); its answer
        as plain JSON values."""
        params = types.TextDocumentPositionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
        )
        answer = await asyncio.wait_for(
            self.protocol.send_request_async(READ_AT_CURSOR, params),  # type: ignore[no-untyped-call]
            ANSWER_TIMEOUT,
        )
        return as_plain(answer)

    def dismiss_suggestion(self, params: Any) -> None:
        """Tell the server the user turned down the suggestion shown in a document
        (`phi3/dismissSuggestion`, `{"textDocument": {"uri"}}`)."""
        self.protocol.notify(DISMISS_SUGGESTION, params)  # type: ignore[no-untyped-call]

    async def hover_at(self, uri: str, line: int, character: int) -> types.Hover | None:
        """The hover at a position."""
        params = types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
        )
        return await asyncio.wait_for(self.text_document_hover_async(params), ANSWER_TIMEOUT)

    async def command(self, name: str, *arguments: Any) -> Any:
        """Run a `workspace/executeCommand`; the result as plain JSON values."""
        params = types.ExecuteCommandParams(command=name, arguments=list(arguments) or None)
        answer = await asyncio.wait_for(
            self.workspace_execute_command_async(params), ANSWER_TIMEOUT
        )
        return as_plain(answer)


def inline_params(
    uri: str, line: int, character: int, selected: types.SelectedCompletionInfo | None = None
) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Automatic,
            selected_completion_info=selected,
        ),
    )


def hover_text(hover: types.Hover | None) -> str:
    """The markdown of a hover ("" for none)."""
    if hover is None:
        return ""
    assert isinstance(hover.contents, types.MarkupContent)
    return hover.contents.value


async def answer_configuration(client: Phi3Client, params: types.ConfigurationParams) -> Any:
    """The settings as they are when asked, answered as `client.pull_answers` says."""
    answer = [
        client.get_configuration(section=item.section, scope_uri=item.scope_uri)
        for item in params.items
    ]
    if client.pull_answers:
        await client.pull_answers.pop(0)()
    if client.pull_results:
        return client.pull_results.pop(0)
    return answer


async def answer_progress_create(
    client: Phi3Client, params: types.WorkDoneProgressCreateParams
) -> None:
    """Note when the server asked for a progress token; answer once
    `client.progress_creates_answered` is set, or a status has come after it (see
    `client.answer_creates_after_a_status`)."""
    client.progress_creates.append(time.monotonic())
    if client.answer_creates_after_a_status:
        await client.wait_for_status(lambda status: True, after=len(client.statuses))
    await client.progress_creates_answered.wait()
    DEFAULT_CLIENT_FEATURES[types.WINDOW_WORK_DONE_PROGRESS_CREATE](client, params)


def note_progress(client: Phi3Client, params: types.ProgressParams) -> None:
    client.add_progress(params)


def make_client() -> Phi3Client:
    from pygls.protocol import default_converter

    client = Phi3Client(converter_factory=default_converter)
    register_lsp_features(
        client,
        {
            **DEFAULT_CLIENT_FEATURES,
            types.WORKSPACE_CONFIGURATION: answer_configuration,
            types.WINDOW_WORK_DONE_PROGRESS_CREATE: answer_progress_create,
            types.PROGRESS: note_progress,
        },
    )
    client.feature(STATUS)(lambda params: client.add_status(params))
    return client


def server_config(
    model: str | None,
    hf_home: Path,
    log_file: Path | None = None,
    hub_endpoint: str | None = None,
) -> ClientServerConfig:
    """The real server as a subprocess with the Hugging Face home `hf_home`: offline, unless a
    `hub_endpoint` is given for it to ask."""
    command = [sys.executable, "-m", "phi3_lsp"]
    if model is not None:
        command += ["--model", model]
    if log_file is not None:
        command += ["--log-file", str(log_file)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(hf_home), PYTHONUNBUFFERED="1")
    if hub_endpoint is not None:
        del env["HF_HUB_OFFLINE"]
        # A download the test holds must outlast huggingface_hub's wait for data (10 s).
        env.update(HF_ENDPOINT=hub_endpoint, HF_HUB_DOWNLOAD_TIMEOUT=str(int(LOAD_TIMEOUT)))
    return ClientServerConfig(server_command=command, client_factory=make_client, server_env=env)


async def start(
    model: str | None,
    hf_home: Path,
    capabilities: types.ClientCapabilities,
    settings: dict[str, Any] | None = None,
    *,
    initialize: bool = True,
    log_file: Path | None = None,
    hub_endpoint: str | None = None,
) -> Phi3Client:
    """Start a server and (unless told not to) initialize a session; the model loads after."""
    client = await server_config(model, hf_home, log_file, hub_endpoint).start()
    assert isinstance(client, Phi3Client)
    if settings is not None:
        client.set_configuration({"phi3": settings})
    if not initialize:
        return client
    await client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities,
            initialization_options={"phi3": settings} if settings is not None else None,
        )
    )
    return client


async def start_over_tcp(
    model: str | None, hf_home: Path, capabilities: types.ClientCapabilities
) -> Phi3Client:
    """`start`, with the server listening on a TCP port of this machine instead of stdio."""
    config = server_config(model, hf_home)
    port = free_port()
    address = ["--tcp", f"127.0.0.1:{port}"]
    client = make_client()
    client.tcp_server = await asyncio.create_subprocess_exec(
        *config.server_command, *address, env=config.server_env
    )
    # The first connection is the session: one refused came before the server listened.
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        try:
            await client.start_tcp("127.0.0.1", port)
            break
        except ConnectionRefusedError:
            assert client.tcp_server.returncode is None, "the server ended before it listened"
            assert time.monotonic() < deadline, "the server never listened"
            await asyncio.sleep(0.05)
    await client.initialize_session(types.InitializeParams(capabilities=capabilities))
    return client


def free_port() -> int:
    """A TCP port of this machine that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def start_smollm2(hf_home: Path, settings: dict[str, Any]) -> Phi3Client:
    """A VS Code-like session with SmolLM2 loaded and ready to complete."""
    client = await start("smollm2-135m", hf_home, vscode_capabilities(), settings)
    await client.wait_for_status(lambda status: status["state"] in ("ready", "error"))
    assert client.statuses[-1]["weightsLoaded"] is True
    return client


async def stop(client: Phi3Client) -> None:
    await client.shutdown_session()
    if client.tcp_server is not None:  # it closes the connection as it exits
        assert await asyncio.wait_for(client.tcp_server.wait(), ANSWER_TIMEOUT) == 0
    await client.stop()  # type: ignore[no-untyped-call]


def vscode_capabilities() -> types.ClientCapabilities:
    """VS Code as it is today: progress, configuration pull, and inline completion."""
    capabilities = client_capabilities("visual-studio-code")
    assert capabilities.text_document is not None
    capabilities.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    return capabilities


PROFILES: dict[str, Callable[[], types.ClientCapabilities]] = {
    "vscode": vscode_capabilities,
    "neovim-0.7": lambda: client_capabilities("neovim@v0.7.0"),
    "emacs-utf32": lambda: client_capabilities("emacs"),
    "bare": types.ClientCapabilities,
}
