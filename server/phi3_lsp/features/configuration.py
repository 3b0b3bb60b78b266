"""Life cycle and settings: initialize, initialized, didChangeConfiguration, shutdown.

`initialize` only reads settings and answers; the model starts loading after `initialized`,
once the client's `workspace/configuration` (when it has one) has been asked for.
"""

from __future__ import annotations

import asyncio
import logging

from lsprotocol import types

from phi3_lsp.features.loading import LoadReporter
from phi3_lsp.server import Phi3LanguageServer
from phi3_lsp.settings import SECTION, parse_settings, section_of

logger = logging.getLogger(__name__)

# A client that does not answer a configuration pull must not keep the model from loading.
_PULL_TIMEOUT_SECONDS = 5.0


def register(server: Phi3LanguageServer) -> None:
    """Add the life-cycle and settings handlers to `server`."""
    reporter = LoadReporter(server)
    initial_problems: list[str] = []

    @server.feature(types.INITIALIZE)
    def on_initialize(ls: Phi3LanguageServer, params: types.InitializeParams) -> None:
        settings, problems = parse_settings(section_of(params.initialization_options), ls.defaults)
        ls.settings = settings
        initial_problems[:] = problems
        ls.index_documents()
        ls.attach_loop(reporter)

    @server.feature(types.INITIALIZED)
    async def on_initialized(ls: Phi3LanguageServer, params: types.InitializedParams) -> None:
        reporter.start()
        settings, problems = ls.settings, list(initial_problems)
        with ls.reading_settings():
            if (pulled := await _pull_section(ls)) is not None:
                settings, problems = parse_settings(pulled, ls.defaults)
            ls.apply_settings(settings, problems)
        ls.warm_up_protocol()  # while the model loads

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def on_did_change_configuration(
        ls: Phi3LanguageServer, params: types.DidChangeConfigurationParams
    ) -> None:
        # Clients that support the pull send `settings: null`; ask them for the section.
        with ls.reading_settings():
            raw = await _pull_section(ls)
            if raw is None:
                raw = section_of(params.settings)
            settings, problems = parse_settings(raw, ls.defaults)
            ls.apply_settings(settings, problems)

    @server.feature(types.SHUTDOWN)
    def on_shutdown(ls: Phi3LanguageServer, params: None) -> None:
        ls.close()


async def _pull_section(ls: Phi3LanguageServer) -> object | None:
    """The client's `phi3` section via `workspace/configuration`, or None if unavailable."""
    if not ls.client_supports("workspace.configuration"):
        return None
    request = types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])
    try:
        async with asyncio.timeout(_PULL_TIMEOUT_SECONDS):  # see LoadReporter._begin
            answer = await ls.workspace_configuration_async(request)
    except Exception as error:
        logger.warning("Could not read the %s settings from the client: %s", SECTION, error)
        return None
    if not answer:
        return None
    section: object = answer[0]
    return section
