"""Open documents and cursor positions, as the handlers need them."""

from __future__ import annotations

from urllib.parse import unquote

from lsprotocol import types

from phi3_lsp.server import Phi3LanguageServer
from phi3_lsp.text_documents import IndexedDocument
from phi3_lsp.tokens import word_before


def register(server: Phi3LanguageServer) -> None:
    """Free the model's memory of a document when the client closes it."""

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: Phi3LanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.forget_document(params.text_document.uri)


def open_document(ls: Phi3LanguageServer, uri: str) -> IndexedDocument | None:
    """The document the client opened at `uri`, or None if it never did.

    pygls would otherwise read a never-opened document from disk; answers about a file
    the editor has not shown us would be answers about text the user may not be looking at.
    """
    documents = ls.workspace.text_documents
    if uri not in documents and unquote(uri) not in documents:
        return None
    document = ls.workspace.get_text_document(uri)
    assert isinstance(document, IndexedDocument)  # see Phi3LanguageServer.index_documents
    return document


def cursor_offset(
    ls: Phi3LanguageServer, document: IndexedDocument, position: types.Position
) -> int | None:
    """The Python offset of an LSP position in `document`; None past the last line."""
    return document.line_index.offset_at(position.line, position.character, ls.position_encoding)


def cursor_position(ls: Phi3LanguageServer, uri: str, position: types.Position) -> types.Position:
    """`position` as the server reads it: a character past the end of its line is the end of
    the line (unchanged when the document is not open or the line is past its end)."""
    document = open_document(ls, uri)
    offset = None if document is None else cursor_offset(ls, document, position)
    if document is None or offset is None:
        return position
    line, character = document.line_index.position_at(offset, ls.position_encoding)
    return types.Position(line=line, character=character)


def word_before_cursor(
    ls: Phi3LanguageServer, uri: str, position: types.Position
) -> tuple[str, types.Position]:
    """The word characters before `position` in the document at `uri` ("" if none), and the
    position where they start (`position` itself when there are none)."""
    document = open_document(ls, uri)
    offset = None if document is None else cursor_offset(ls, document, position)
    if document is None or offset is None:
        return "", position
    word = word_before(document.line_index.blocks, offset)
    line, character = document.line_index.position_at(offset - len(word), ls.position_encoding)
    return word, types.Position(line=line, character=character)
