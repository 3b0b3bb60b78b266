/**
 * Suggestions asked for and not shown yet, by document, so that Escape in a document's editor
 * can turn its suggestions down before they arrive.
 *
 * VS Code binds Escape to hiding an inline suggestion only while one is visible. A model on a
 * CPU can take seconds; a suggestion the user pressed Escape for in the meantime would still
 * appear when it comes (the extension asks again with a late answer, see
 * inlineCompletionMiddleware.ts). While a suggestion is pending, the extension's own Escape
 * binding dismisses it instead: the server stops, and nothing is shown. The binding compares
 * the URIs of the documents with a pending suggestion with the focused editor's `resource` (or
 * notebook cell), so it applies in those documents' editors only, and leaves Escape to VS Code
 * elsewhere (a comment editor, the Source Control input, another file, whose suggestion it
 * must not turn down either).
 *
 * Plain module (no VS Code API).
 */

export class PendingSuggestions {
  /** The dismissals of the pending suggestions, by their document's URI. */
  private readonly byDocument = new Map<string, Set<() => void>>();

  /**
   * `documentsChanged` hears the URIs of the documents with a pending suggestion whenever a
   * document's first one begins or its last one ends.
   */
  constructor(private readonly documentsChanged: (uris: readonly string[]) => void) {}

  /** The URIs of the documents with a pending suggestion. */
  get documents(): readonly string[] {
    return [...this.byDocument.keys()];
  }

  /**
   * A suggestion in the document at `uri` is pending until the returned handle is disposed
   * (which may happen more than once); `dismiss` is called if the user turns it down first.
   */
  add(uri: string, dismiss: () => void): { dispose(): void } {
    // A wrapper of its own: the same callback may be pending twice, and each ends by itself.
    const entry = () => {
      dismiss();
    };
    const dismissals = this.byDocument.get(uri) ?? new Set();
    dismissals.add(entry);
    if (!this.byDocument.has(uri)) {
      this.byDocument.set(uri, dismissals);
      this.documentsChanged(this.documents);
    }
    return {
      dispose: () => {
        if (this.byDocument.get(uri) === dismissals && dismissals.delete(entry)) {
          if (dismissals.size === 0) {
            this.byDocument.delete(uri);
            this.documentsChanged(this.documents);
          }
        }
      },
    };
  }

  /** Turns down the pending suggestions of the document at `uri`, and no other's. */
  dismiss(uri: string): void {
    const dismissals = this.byDocument.get(uri);
    if (dismissals === undefined) {
      return;
    }
    this.byDocument.delete(uri);
    this.documentsChanged(this.documents);
    for (const dismiss of dismissals) {
      dismiss();
    }
  }
}
