"""Params are read as the protocol types them, as JSON encoders write them."""

from __future__ import annotations

from typing import Any

import pytest
from lsprotocol import types
from pygls.protocol import default_converter

from phi3_lsp.request_rules import RequestRulesProtocol
from phi3_lsp.server import Phi3LanguageServer
from phi3_lsp.strict_params import read_strictly


def hover(line: Any) -> dict[str, Any]:
    return {"textDocument": {"uri": "untitled:x"}, "position": {"line": line, "character": 1}}


@pytest.fixture
def converter() -> Any:
    converter = default_converter()  # type: ignore[no-untyped-call]
    read_strictly(converter)
    return converter


@pytest.mark.parametrize("line", ["0", 0.5, True, None])
def test_an_integer_of_another_json_type_is_refused(converter: Any, line: Any) -> None:
    # Taken for line 0 before: an edit at such a position lands where the user did not mean.
    with pytest.raises(Exception, match="While structuring"):
        converter.structure(hover(line), types.HoverParams)


@pytest.mark.parametrize("arguments", ["xyz", {"first": 1}])
def test_an_array_of_another_json_type_is_refused(converter: Any, arguments: Any) -> None:
    with pytest.raises(Exception, match="While structuring"):
        converter.structure({"command": "c", "arguments": arguments}, types.ExecuteCommandParams)


def test_what_json_encoders_write_for_the_right_value_is_taken(converter: Any) -> None:
    assert converter.structure(hover(2.0), types.HoverParams).position.line == 2
    # Lua's encoders write an empty table as {}.
    read = converter.structure({"command": "c", "arguments": {}}, types.ExecuteCommandParams)
    assert read.arguments == ()
    assert converter.structure({"command": "c", "arguments": [1, "a"]}, types.ExecuteCommandParams)
    context = {**hover(0), "context": {"triggerKind": 1}}
    trigger = converter.structure(context, types.InlineCompletionParams).context.trigger_kind
    assert trigger is types.InlineCompletionTriggerKind.Invoked
    with pytest.raises(Exception, match="While structuring"):
        converter.structure({**hover(0), "context": {"triggerKind": 9}}, types.CompletionParams)


def test_initialize_is_read_whatever_its_capabilities_types() -> None:
    # The handshake has answered it already: refused when pygls reads it, the session would be
    # dead, every later request answered "came before initialize".
    protocol = Phi3LanguageServer().protocol
    assert isinstance(protocol, RequestRulesProtocol)
    capabilities = {
        "general": {"positionEncodings": "utf-16"},
        "textDocument": {"foldingRange": {"rangeLimit": "5000"}},
    }
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": types.INITIALIZE,
        "params": {"processId": None, "rootUri": None, "capabilities": capabilities},
    }
    message = protocol.structure_message(initialize)
    assert isinstance(message, types.InitializeRequest)
    text_document = message.params.capabilities.text_document
    assert text_document is not None and text_document.folding_range is not None
    assert text_document.folding_range.range_limit == 5000
    # Not so for the requests after it.
    refused = protocol.structure_message(
        {"jsonrpc": "2.0", "id": 2, "method": types.TEXT_DOCUMENT_HOVER, "params": hover("0")}
    )
    assert not isinstance(refused, types.HoverRequest)
