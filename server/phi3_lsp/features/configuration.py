"""Life cycle and settings: initialize, initialized, didChangeConfiguration, shutdown.

`initialize` only reads settings and answers; the model starts loading after `initialized`,
once the client's `workspace/configuration` (when it has one) has been asked for. Its statuses
and progress are sent from `initialize` on: a client that breaks the order with a settings
change before `initialized` has that change loaded at once, and shown.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lsprotocol import types

from phi3_lsp.features.client_requests import answer_within
from phi3_lsp.features.loading import LoadReporter
from phi3_lsp.server import Phi3LanguageServer
from phi3_lsp.settings import (
    SECTION,
    Settings,
    parse_settings,
    section_of,
    unwrapped_settings,
)
from phi3_lsp.settings_reads import SettingsReads

logger = logging.getLogger(__name__)

# A client that does not answer a configuration pull must not keep the model from loading.
_PULL_TIMEOUT_SECONDS = 5.0


def register(server: Phi3LanguageServer) -> None:
    """Add the life-cycle and settings handlers to `server`."""
    reporter = LoadReporter(server)
    initial_problems: list[str] = []
    initial_unread: list[str] = []
    reads = SettingsReads()

    def apply_unless_stale(
        ls: Phi3LanguageServer,
        number: int,
        settings: Settings,
        problems: list[str] | None,
        unread: Sequence[str] = (),
    ) -> None:
        if reads.take(number):
            ls.apply_settings(settings, problems, unread)
        else:
            logger.info("A settings read answered after a newer one: dropped")

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: Phi3LanguageServer, params: types.InitializeParams) -> None:
        options = params.initialization_options
        settings, problems = parse_settings(section_of(options), ls.defaults)
        ls.settings = settings
        initial_problems[:] = problems
        initial_unread[:] = unwrapped_settings(options)
        ls.index_documents()
        ls.attach_loop(reporter)
        reporter.start()  # LSP lets the server send once it has answered `initialize`

    @server.feature(types.INITIALIZED)
    async def on_initialized(ls: Phi3LanguageServer, params: types.InitializedParams) -> None:
        number = reads.start()
        with ls.reading_settings():
            pulled = await _pull_section(ls)
            if pulled is None:  # the initializationOptions stand
                apply_unless_stale(
                    ls, number, ls.settings, list(initial_problems), list(initial_unread)
                )
            else:
                apply_unless_stale(
                    ls, number, *parse_settings(pulled, ls.defaults, current=ls.settings)
                )
        ls.warm_up_protocol()  # while the model loads

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def on_did_change_configuration(
        ls: Phi3LanguageServer, params: types.DidChangeConfigurationParams
    ) -> None:
        # Clients that support the pull send `settings: null`; ask them for the section.
        number = reads.start()
        with ls.reading_settings():
            raw = await _pull_section(ls)
            if raw is None:
                raw = section_of(params.settings)
            if raw is None:
                # No phi3 section to read (a failed pull, or a change of other tools' settings):
                # the settings in force stay, rather than all going back to their defaults.
                logger.info("No %s settings came with the change: they stay as they are", SECTION)
                if unread := unwrapped_settings(params.settings):
                    # The values' problems shown stand: the values in force stay, and so do they.
                    apply_unless_stale(ls, number, ls.settings, None, unread)
                return
            apply_unless_stale(ls, number, *parse_settings(raw, ls.defaults, current=ls.settings))

    @server.feature(types.SHUTDOWN)
    def on_shutdown(ls: Phi3LanguageServer, params: None) -> None:
        ls.close()


async def _pull_section(ls: Phi3LanguageServer) -> object | None:
    """The client's `phi3` section via `workspace/configuration`, or None if unavailable."""
    if not ls.client_supports("workspace.configuration"):
        return None
    request = types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])
    try:
        answer = await answer_within(
            ls.workspace_configuration_async(request), _PULL_TIMEOUT_SECONDS
        )
    except TimeoutError:
        logger.warning(
            "The client did not answer for the %s settings within %.0f s",
            SECTION,
            _PULL_TIMEOUT_SECONDS,
        )
        return None
    except Exception as error:
        logger.warning("Could not read the %s settings from the client: %s", SECTION, error)
        return None
    if not answer:
        return None
    section: object = answer[0]
    return section
