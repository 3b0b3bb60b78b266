/**
 * A client's middleware: the inline completion middleware (inlineCompletionMiddleware.ts)
 * connected to the status bar, the model's load, the pending suggestions and the editor, and
 * the growing of a suggestion the server still generates (suggestionGrowth.ts).
 */

import * as vscode from "vscode";
import { askIfCursorThere, asksAfterAccept, EditorAsks } from "./editorAsks";
import {
  type InlineCompletionMiddleware,
  inlineCompletionMiddleware,
} from "./inlineCompletionMiddleware";
import { modelLoaded } from "./modelLoad";
import { explainNoSuggestions, loadedWithoutWeights } from "./noWeights";
import type { SessionDependencies } from "./sessionDependencies";
import { SuggestionGrowth } from "./suggestionGrowth";

/** The middleware of one client, to be disposed with it. */
export function clientMiddleware(deps: SessionDependencies): InlineCompletionMiddleware {
  const { output, statusBar } = deps;
  const editorAsks = new EditorAsks();
  const growth = new SuggestionGrowth({
    status: statusBar,
    inlineCompletions: () => deps.settings().inlineCompletions,
    watchPlace,
    onActiveEditorChanged: (listener) => vscode.window.onDidChangeActiveTextEditor(listener),
    askAgain: (document, position) => {
      askIfCursorThere(document, position);
    },
    suggestionPending: (dismiss) => deps.pendingSuggestions.add(dismiss),
  });
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
    suggestionShown: (document, position) => {
      growth.answered(document, position);
    },
  });
  return {
    provideInlineCompletionItems: middleware.provideInlineCompletionItems,
    dispose: () => {
      middleware.dispose();
      growth.dispose();
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
