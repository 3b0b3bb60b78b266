/**
 * Asking again for a suggestion whose editor was not active when its answer came.
 *
 * The extension asks VS Code again once a late answer is there (inlineCompletionMiddleware.ts),
 * but VS Code's trigger only acts on the active editor: an answer that comes while the user is
 * in another editor would never show, though the server keeps it. It is asked for again when
 * its editor becomes active with the cursor still alone at the answered place and the document
 * as it was; the server then answers at once, unless a completion elsewhere has replaced the one
 * suggestion it keeps.
 *
 * Plain module (no VS Code API).
 */

/** What this module reads of a VS Code text editor. */
export interface EditorPlace<Document> {
  readonly document: Document;
  /** The document's version now. */
  readonly version: number;
  /** The cursor, when there is one and it selects nothing; undefined otherwise. */
  readonly cursor: Place | undefined;
}

interface Place {
  readonly line: number;
  readonly character: number;
}

interface AnsweredPlace extends Place {
  readonly version: number;
}

export class AsksOnReturn<Document> {
  /** One answered place per document: a later answer there replaces an earlier one. */
  private readonly waiting = new Map<Document, AnsweredPlace>();
  /**
   * The document of the editor just activated, until its first cursor change: VS Code tells of
   * an editor that becomes active before it has put the cursor back where it was.
   */
  private restoring: Document | undefined;

  /** An answer at `at` in `document`'s `version` came while another editor was active. */
  answeredElsewhere(document: Document, version: number, at: Place): void {
    this.waiting.set(document, { version, line: at.line, character: at.character });
  }

  /** `editor` has become active: true when it should be asked again now. */
  editorActivated(editor: EditorPlace<Document>): boolean {
    this.restoring = editor.document;
    return this.cursorBack(editor);
  }

  /**
   * The cursor of the active `editor` changed: true when it should be asked again now, that is
   * when this puts the cursor of an editor just activated back at the answered place.
   */
  cursorChanged(editor: EditorPlace<Document>): boolean {
    if (this.restoring !== editor.document) {
      return false;
    }
    this.restoring = undefined;
    return this.cursorBack(editor);
  }

  /** `document` was closed: nothing will show in it. */
  documentClosed(document: Document): void {
    this.waiting.delete(document);
  }

  /**
   * True, and forgotten, when `editor` has its cursor at its document's answered place; an edit
   * since the answer makes it useless; a cursor elsewhere keeps it for a later return.
   */
  private cursorBack(editor: EditorPlace<Document>): boolean {
    const answered = this.waiting.get(editor.document);
    if (answered === undefined) {
      return false;
    }
    if (answered.version !== editor.version) {
      this.waiting.delete(editor.document);
      return false;
    }
    const { cursor } = editor;
    const there = cursor?.line === answered.line && cursor.character === answered.character;
    if (there) {
      this.waiting.delete(editor.document);
      this.restoring = undefined;
    }
    return there;
  }
}
