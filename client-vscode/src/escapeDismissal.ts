/**
 * What Escape turns down in the focused editor: the pending suggestions of its document, and
 * the server's generation if the server generates for that document.
 *
 * Escape has two bindings to the dismissal (package.json): while a suggestion of the focused
 * editor's document is pending, and while ghost text shows there and the server generates for
 * that document. Both may hold at once (a growing suggestion is pending while the server
 * generates its rest), and either may hold while another document has a suggestion pending or
 * generating (its request goes on while another editor is active, inlineCompletionMiddleware.ts):
 * whichever applied, only what belongs to the focused editor's document is turned down.
 *
 * Plain module (no VS Code API).
 */

import type { GeneratingDocument } from "./generatingDocument";
import type { PendingSuggestions } from "./pendingSuggestions";

export interface DismissalTargets {
  readonly pending: PendingSuggestions;
  readonly generating: GeneratingDocument;
  /** Has the server stop generating for the document at `uri` (`phi3/dismissSuggestion`). */
  stopGeneration(uri: string): void;
}

/** Escape in the editor of the document at `uri`. */
export function dismissInDocument(uri: string, targets: DismissalTargets): void {
  targets.pending.dismiss(uri);
  if (targets.generating.uri === uri) {
    targets.stopGeneration(uri);
  }
}
