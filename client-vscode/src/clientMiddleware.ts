/**
 * A client's middleware: the inline completion middleware (inlineCompletionMiddleware.ts)
 * connected to the status bar, the model's load, the pending suggestions and the editor.
 */

import * as vscode from "vscode";
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
  return inlineCompletionMiddleware({
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
    askAgain: askForInlineSuggestionsAgain,
    suggestionPending: (dismiss) => deps.pendingSuggestions.add(dismiss),
  });
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

/** Asks VS Code for inline suggestions at the cursor, if it is still alone at `position`. */
function askForInlineSuggestionsAgain(
  document: vscode.TextDocument,
  position: vscode.Position,
): void {
  const editor = vscode.window.activeTextEditor;
  const cursorThere =
    editor?.document === document &&
    editor.selections.length === 1 &&
    editor.selection.isEmpty &&
    editor.selection.active.isEqual(position);
  if (cursorThere) {
    void vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
  }
}
