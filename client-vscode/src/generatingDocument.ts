/**
 * The document whose suggestion the server generates, for Escape to stop that generation there
 * and only there.
 *
 * `phi3/status` says "generating" but not where. The server generates for its last suggestion,
 * that is for the last inline completion request it was sent (the middleware's and a growing
 * suggestion's asks alike), so every such request is seen on its way out (`sendRequest`
 * middleware) and its document kept. While the status says "generating", the context key holds
 * that document's URI: Escape's binding compares it with the focused editor's `resource` (or
 * notebook cell), so it applies in the editor of that document only, and leaves the key to VS
 * Code elsewhere (the Source Control input, a comment editor, another file); the dismissal
 * names that document, whichever editor was active.
 *
 * Plain module (no VS Code API).
 */

import type { ServerState } from "./protocol";

/** The method of the requests that make the server generate a suggestion. */
const INLINE_COMPLETION_METHOD = "textDocument/inlineCompletion";

export class GeneratingDocument {
  /** The URI of the last inline completion request sent, as the server knows the document. */
  private lastAsked: string | undefined;
  private generating = false;
  private reported: string | undefined;

  /** `changed` hears the URIs the context key should hold: that document's, or none. */
  constructor(private readonly changed: (uris: readonly string[]) => void) {}

  /** The URI of the document the server generates for now, if it generates. */
  get uri(): string | undefined {
    return this.generating ? this.lastAsked : undefined;
  }

  /** The server's state changed (`phi3/status`; undefined: no server). */
  statusChanged(state: ServerState | undefined): void {
    this.generating = state === "generating";
    this.report();
  }

  /**
   * The client sends a request of `type` with `params` (its `sendRequest` middleware): an
   * inline completion request makes its document the one the server generates for.
   */
  requestSent(type: string | { readonly method: string }, params: unknown): void {
    const method = typeof type === "string" ? type : type.method;
    const uri = method === INLINE_COMPLETION_METHOD ? documentUri(params) : undefined;
    if (uri !== undefined) {
      this.lastAsked = uri;
      this.report();
    }
  }

  private report(): void {
    const uri = this.uri;
    if (uri !== this.reported) {
      this.reported = uri;
      this.changed(uri === undefined ? [] : [uri]);
    }
  }
}

/** `params.textDocument.uri` of a request, if it has one. */
function documentUri(params: unknown): string | undefined {
  if (typeof params !== "object" || params === null || !("textDocument" in params)) {
    return undefined;
  }
  const { textDocument } = params;
  if (typeof textDocument !== "object" || textDocument === null || !("uri" in textDocument)) {
    return undefined;
  }
  return typeof textDocument.uri === "string" ? textDocument.uri : undefined;
}
