"""The model host's events as LSP: `phi3/status`, work-done progress and messages.

Work-done progress shows a load, and the reading of a completion's long prompt (on
Phi-3-mini ~100 s for 1,500 tokens), each under a token of its own.

The host calls in from the model thread; everything is handed to the event loop, where one
task sends it all in order: a load's message must reach the client before the status that says
the load has ended. A progress's steps wait for the client's answer to its `create` (a
`$/progress` must not overtake it); the statuses and messages do not.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable
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

_Step = Callable[[str | None], None]
"""Sends one step of a progress, given its token (None: the log has it instead)."""


class _Progress:
    """One progress: its steps wait until its token is known (the client answered its
    `create`), or known to be none."""

    def __init__(self) -> None:
        self._token: str | None = None
        self._waiting: list[_Step] | None = []

    def then(self, step: _Step) -> None:
        """Send `step` now if the token is known, else once it is, after the steps before it."""
        if self._waiting is None:
            step(self._token)
        else:
            self._waiting.append(step)

    def created(self, token: str | None) -> None:
        """The token is known: send the steps that waited for it."""
        waiting, self._token, self._waiting = self._waiting or [], token, None
        for step in waiting:
            step(token)


class LoadReporter:
    """Implements the model host's listener for an LSP client."""

    def __init__(self, server: Phi3LanguageServer) -> None:
        self._server = server
        self._events: asyncio.Queue[_Event] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_create: asyncio.Task[None] | None = None
        self._create_went_unanswered = False
        """A client that left one `create` unanswered is not asked again: it would only hold
        up the next progress's steps for as long."""

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
        load: _Progress | None = None
        reading: _Progress | None = None  # the prompt being read, once shown
        while True:
            event = await self._events.get()
            if isinstance(event, _Began):
                load = self._begin(f"Loading {event.model}", "phi3-load")
            elif isinstance(event, Status):
                self._server.protocol.notify(STATUS_NOTIFICATION, event.to_json())
                self._server.status_sent()
            elif isinstance(event, ProgressUpdate):
                if load is None:
                    logger.info("%s", event.message)
                else:
                    load.then(functools.partial(self._report, update=event))
            elif isinstance(event, PromptReading):
                if reading is None:  # once per prompt, even when the client refused a token
                    reading = self._begin(PROMPT_READING_TITLE, "phi3-prompt")
                reading.then(functools.partial(self._report_reading, reading=event))
                if event.ended:
                    reading = None
            else:
                self._end(load, event)
                load = None

    def _begin(self, title: str, token_prefix: str) -> _Progress:
        progress = _Progress()
        if (
            not self._server.client_supports("window.work_done_progress")
            or self._create_went_unanswered
        ):
            logger.info("%s", title)
            progress.created(None)
            return progress
        # Asked aside: the statuses do not wait for the answer.
        self._last_create = asyncio.get_running_loop().create_task(
            self._create(progress, title, token_prefix, after=self._last_create)
        )
        return progress

    async def _create(
        self,
        progress: _Progress,
        title: str,
        token_prefix: str,
        *,
        after: asyncio.Task[None] | None,
    ) -> None:
        if after is not None and not after.done():
            await asyncio.wait([after])  # answered at all? (a few ms, for most clients)
        if self._create_went_unanswered:
            logger.info("%s", title)
            progress.created(None)
            return
        token = f"{token_prefix}-{uuid.uuid4()}"  # a fresh token for every progress
        work_done = self._server.work_done_progress
        try:
            await answer_within(work_done.create_async(token), _CREATE_TIMEOUT_SECONDS)
        except TimeoutError:
            self._create_went_unanswered = True
            logger.info(
                "%s (the client did not answer for a progress bar within %.0f s: "
                "progress goes to the log from now on)",
                title,
                _CREATE_TIMEOUT_SECONDS,
            )
            progress.created(None)
            return
        except Exception as error:
            logger.info("%s (the client refused a progress bar: %s)", title, error)
            progress.created(None)
            return
        work_done.begin(token, types.WorkDoneProgressBegin(title=title, percentage=0))
        progress.created(token)

    def _report_reading(self, token: str | None, *, reading: PromptReading) -> None:
        message = f"{reading.read:,} of {reading.total:,} tokens"
        if token is None:
            logger.debug("%s: %s", PROMPT_READING_TITLE, message)
        elif reading.ended:
            self._end_work_done(token, message)
        else:
            percentage = reading.read * 100 // max(1, reading.total)
            report = types.WorkDoneProgressReport(message=message, percentage=percentage)
            self._server.work_done_progress.report(token, report)

    def _report(self, token: str | None, *, update: ProgressUpdate) -> None:
        percentage = None if update.fraction is None else round(update.fraction * 100)
        if token is None:
            logger.info("%s", update.message)
            return
        report = types.WorkDoneProgressReport(message=update.message, percentage=percentage)
        self._server.work_done_progress.report(token, report)

    def _end(self, load: _Progress | None, outcome: LoadOutcome) -> None:
        # The message now, before the status that ends the load; the progress's end after its
        # steps, once its token is known.
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
        if load is None:
            logger.info("%s", summary)
        else:
            load.then(functools.partial(self._end_progress, summary=summary))

    def _end_progress(self, token: str | None, *, summary: str) -> None:
        logger.info("%s", summary)
        if token is not None:
            self._end_work_done(token, summary)

    def _end_work_done(self, token: str, message: str) -> None:
        work_done = self._server.work_done_progress
        work_done.end(token, types.WorkDoneProgressEnd(message=message))
        # pygls keeps every token it was given (to cancel its work), ended or not: one more a
        # load, and a prompt read, for as long as the server ran.
        work_done.tokens.pop(token, None)

    def _show(self, kind: types.MessageType, message: str) -> None:
        self._server.window_show_message(types.ShowMessageParams(type=kind, message=message))
