"""The model host's events as LSP: `phi3/status`, work-done progress and messages.

Work-done progress shows a load, and the reading of a completion's long prompt (on
Phi-3-mini ~100 s for 1,500 tokens), each under a token of its own.

The host calls in from the model thread; everything is handed to the event loop, where one
task sends it all in order: a `$/progress` must not overtake the `create` it belongs to, and
a load's message must reach the client before the status that says the load has ended.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from lsprotocol import types

from phi3_lsp.features.client_requests import answer_within
from phi3_lsp.model_host import LoadOutcome, Status
from phi3_lsp.progress import ProgressUpdate
from phi3_lsp.prompt_reading import PromptReading
from phi3_lsp.server import STATUS_NOTIFICATION, Phi3LanguageServer

logger = logging.getLogger(__name__)

# A client that never answers `window/workDoneProgress/create` must not stall the reports.
_CREATE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class _Began:
    model: str


_Event = _Began | ProgressUpdate | LoadOutcome | Status | PromptReading
PROMPT_READING_TITLE = "Reading the prompt"


class LoadReporter:
    """Implements the model host's listener for an LSP client."""

    def __init__(self, server: Phi3LanguageServer) -> None:
        self._server = server
        self._events: asyncio.Queue[_Event] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sending progress; call on the event loop."""
        self._events = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._send_events())

    def status_changed(self, status: Status) -> None:
        """Send `phi3/status`."""
        self._post(status)

    def load_began(self, model: str) -> None:
        """A load started: begin a progress."""
        self._post(_Began(model))

    def load_progressed(self, update: ProgressUpdate) -> None:
        """A step of the load: report it."""
        self._post(update)

    def load_ended(self, outcome: LoadOutcome) -> None:
        """End the progress; show what the user must act on."""
        self._post(outcome)

    def prompt_read(self, reading: PromptReading) -> None:
        """Show how much of a long prompt is read, in a progress of its own."""
        self._post(reading)

    def _post(self, event: _Event) -> None:
        events = self._events
        if events is not None:
            self._server.call_soon(lambda: events.put_nowait(event))

    async def _send_events(self) -> None:
        assert self._events is not None
        token: str | None = None
        reading_token: str | None = None
        reading = False  # a prompt's reading is shown (under `reading_token`, if it has one)
        while True:
            event = await self._events.get()
            if isinstance(event, _Began):
                token = await self._begin(f"Loading {event.model}", "phi3-load")
            elif isinstance(event, Status):
                self._server.protocol.notify(STATUS_NOTIFICATION, event.to_json())
                self._server.status_sent()
            elif isinstance(event, ProgressUpdate):
                self._report(token, event)
            elif isinstance(event, PromptReading):
                if not reading:  # once per prompt, even when the client refused a token
                    reading_token = await self._begin(PROMPT_READING_TITLE, "phi3-prompt")
                    reading = True
                self._report_reading(reading_token, event)
                if event.ended:
                    reading_token, reading = None, False
            else:
                self._end(token, event)
                token = None

    async def _begin(self, title: str, token_prefix: str) -> str | None:
        if not self._server.client_supports("window.work_done_progress"):
            logger.info("%s", title)
            return None
        token = f"{token_prefix}-{uuid.uuid4()}"  # a fresh token for every progress
        progress = self._server.work_done_progress
        try:
            await answer_within(progress.create_async(token), _CREATE_TIMEOUT_SECONDS)
        except TimeoutError:
            logger.info(
                "%s (the client did not answer for a progress bar within %.0f s)",
                title,
                _CREATE_TIMEOUT_SECONDS,
            )
            return None
        except Exception as error:
            logger.info("%s (the client refused a progress bar: %s)", title, error)
            return None
        progress.begin(token, types.WorkDoneProgressBegin(title=title, percentage=0))
        return token

    def _report_reading(self, token: str | None, reading: PromptReading) -> None:
        message = f"{reading.read:,} of {reading.total:,} tokens"
        if token is None:
            logger.debug("%s: %s", PROMPT_READING_TITLE, message)
        elif reading.ended:
            self._server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        else:
            percentage = reading.read * 100 // max(1, reading.total)
            report = types.WorkDoneProgressReport(message=message, percentage=percentage)
            self._server.work_done_progress.report(token, report)

    def _report(self, token: str | None, update: ProgressUpdate) -> None:
        percentage = None if update.fraction is None else round(update.fraction * 100)
        if token is None:
            logger.info("%s", update.message)
            return
        report = types.WorkDoneProgressReport(message=update.message, percentage=percentage)
        self._server.work_done_progress.report(token, report)

    def _end(self, token: str | None, outcome: LoadOutcome) -> None:
        if outcome.superseded:
            summary = f"Stopped loading {outcome.model}: another load was asked for"
        elif outcome.error is not None:
            summary = f"{outcome.model} could not load"
            self._show(types.MessageType.Error, outcome.error)
        elif outcome.hint is not None:
            summary = f"{outcome.model}: architecture only, no weights"
            self._show(types.MessageType.Warning, outcome.hint)
        else:
            summary = f"{outcome.model} is ready"
        logger.info("%s", summary)
        if token is not None:
            end = types.WorkDoneProgressEnd(message=summary)
            self._server.work_done_progress.end(token, end)

    def _show(self, kind: types.MessageType, message: str) -> None:
        self._server.window_show_message(types.ShowMessageParams(type=kind, message=message))
