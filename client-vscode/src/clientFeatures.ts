/**
 * Which of vscode-languageclient's built-in features the extension leaves out, and why.
 *
 * Plain module (no VS Code API).
 */

/**
 * LSP methods whose generic client feature is not registered:
 * - `workspace/executeCommand`: the extension contributes the `phi3.*` palette commands itself
 *   and sends the request directly; the generic feature would register the server's command ids
 *   (the same names) as VS Code commands a second time and fail the start.
 * - `textDocument/completion`: the server offers it for clients without inline completion
 *   (docs/protocol.md). VS Code has inline completion, so the classic feature would only show
 *   the same continuation a second time in the suggest widget, and each of the two requests
 *   would supersede the other on the server's single model thread.
 */
const METHODS_LEFT_OUT: ReadonlySet<string> = new Set([
  "workspace/executeCommand",
  "textDocument/completion",
]);

/** True when the client feature for `method` must not be registered. */
export function isFeatureLeftOut(method: string): boolean {
  return METHODS_LEFT_OUT.has(method);
}
