/**
 * A client's middleware: the inline completion middleware (inlineCompletionMiddleware.ts)
 * connected to the status bar, the model's load, the pending suggestions and the editor.
 */

import * as vscode from "vscode";
import { asksAfterAccept, EditorAsks } from "./editorAsks";
import {
  type InlineCompletionMiddleware,
  inlineCompletionMiddleware,
} from "./inlineCompletionMiddleware";
import { modelLoaded } from "./modelLoad";
import { explainNoSuggestions, loadedWithoutWeights } from "./noWeights";
import type { SessionDependencies } from "./sessionDependencies";

/** The middleware of one client, to be disposed with it. */
export function clientMiddleware(deps: SessionDependencies): InlineCompletionMiddleware {
  const { output, statusBar } = deps;
  const editorAsks = new EditorAsks();
  const middleware = inlineCompletionMiddleware({
    currentSettings: () => deps.settings(),
    cannotSuggest: () => {
      const status = statusBar.serverStatus;
      if (!loadedWithoutWeights(status)) {
        return false;
      }
      explainNoSuggestions(status, output);
      return true;
    },
    untilModelLoaded: (cancel) => modelLoaded(statusBar, cancel),
    requestStarted: () => {
      statusBar.requestStarted();
    },
    requestFinished: (ms, cancelled) => {
      statusBar.requestFinished(ms, cancelled);
    },
    watchPlace,
    askAgain: (document, position) => {
      editorAsks.askAgain(document, position);
    },
    askedAfterAccept: (document, position) =>
      asksAfterAccept.take(document.uri.toString(), position),
    suggestionPending: (dismiss) => deps.pendingSuggestions.add(dismiss),
  });
  return {
    provideInlineCompletionItems: middleware.provideInlineCompletionItems,
    dispose: () => {
      middleware.dispose();
      editorAsks.dispose();
    },
  };
}

/** Calls `listener` when `document` is edited or no cursor of it stays at `position`. */
function watchPlace(
  document: vscode.TextDocument,
  position: vscode.Position,
  listener: () => void,
): vscode.Disposable {
  const edits = vscode.workspace.onDidChangeTextDocument((event) => {
    if (event.document === document && event.contentChanges.length > 0) {
      listener();
    }
  });
  const moves = vscode.window.onDidChangeTextEditorSelection((event) => {
    const stays = event.selections.some(
      (selection) => selection.isEmpty && selection.active.isEqual(position),
    );
    if (event.textEditor.document === document && !stays) {
      listener();
    }
  });
  return vscode.Disposable.from(edits, moves);
}
