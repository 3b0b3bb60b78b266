"""Open documents that apply edits through a line index, by LSP's rules for lines.

pygls applies an edit by splitting the whole text into lines and writing it out again: ~4 ms a
keystroke in a 10,000-line file, paid before the next request is read. It also splits lines
where LSP does not (at form feeds and other separators `str.splitlines` knows), so an edit
below a form feed landed on the wrong line. Here an edit is two offsets and the blocks of text
around them (see `text_blocks`), and the line index it needs is kept with the text for the
handlers to use too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import unquote

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

from phi3_lsp.positions import Encoding, LineIndex

logger = logging.getLogger(__name__)

SYNC_KIND = types.TextDocumentSyncKind.Incremental


class IndexedDocument(TextDocument):
    """A pygls document that keeps the line index of its current text.

    After an edit the text lives in the index only (in blocks, see `text_blocks`): `source`
    joins it when read, which handlers that need a part of it avoid by reading `line_index`.
    """

    _index: LineIndex | None = None

    @property
    def source(self) -> str:
        """The whole text (after an edit, a copy of the whole document on first read)."""
        if self._source is None and self._index is not None:
            self._source = self._index.text
        return super().source

    @property
    def line_index(self) -> LineIndex:
        """The current text and where its lines start."""
        if self._index is None:
            self._index = LineIndex(self.source)
        return self._index

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        index, encoding = self.line_index, encoding_named(self.position_codec.encoding)
        start, end = (
            _offset(index, position, encoding)
            for position in (change.range.start, change.range.end)
        )
        # A range whose start comes after its end covers the text between them, as VS Code
        # and Neovim read one (swapped), rather than being an insertion at its start.
        start, end = min(start, end), max(start, end)
        self._index = index.replaced(start, end, change.text)
        self._source = None  # joined from the index when read

    def _apply_full_change(self, change: types.TextDocumentContentChangeEvent) -> None:
        super()._apply_full_change(change)
        self._index = None  # made for the new text when asked


class IndexedWorkspace(Workspace):
    """A pygls workspace whose text documents are `IndexedDocument`s."""

    def __init__(
        self,
        root_uri: str | None,
        workspace_folders: Sequence[types.WorkspaceFolder],
        position_encoding: types.PositionEncodingKind | str | None,
    ) -> None:
        super().__init__(root_uri, SYNC_KIND, workspace_folders, position_encoding)

    def update_text_document(
        self,
        text_doc: types.VersionedTextDocumentIdentifier,
        change: types.TextDocumentContentChangeEvent,
    ) -> None:
        """Apply `change`; an edit of a document that was never opened (or was closed) is logged
        and dropped, where pygls raised KeyError and the client was shown "Error in server"."""
        if unquote(text_doc.uri) not in self.text_documents:
            logger.warning("Ignoring an edit of %s, which is not open", text_doc.uri)
            return
        super().update_text_document(text_doc, change)

    def _create_text_document(
        self,
        doc_uri: str,
        source: str | None = None,
        version: int | None = None,
        language_id: str | None = None,
    ) -> TextDocument:
        return IndexedDocument(
            doc_uri,
            source=source,
            version=version,
            language_id=language_id,
            sync_kind=SYNC_KIND,
            position_codec=self.position_codec,
        )


def encoding_named(value: object) -> Encoding:
    """The encoding of pygls' negotiated value (an enum member or, for some clients, a string)."""
    name = str(getattr(value, "value", value))
    if name == "utf-8":
        return "utf-8"
    if name == "utf-32":
        return "utf-32"
    return "utf-16"


def _offset(index: LineIndex, position: types.Position, encoding: Encoding) -> int:
    """The offset of an edit's end point; a line past the last means the end of the text."""
    offset = index.offset_at(position.line, position.character, encoding)
    return len(index.blocks) if offset is None else offset
