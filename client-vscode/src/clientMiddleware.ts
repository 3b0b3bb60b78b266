/**
 * A client's middleware: the inline completion middleware (inlineCompletionMiddleware.ts)
 * connected to the status bar, the model's load, the pending suggestions and the editor, and
 * the growing of a suggestion the server still generates (suggestionGrowth.ts); and every
 * request the client sends seen on its way out, for the document the server generates for
 * (generatingDocument.ts).
 */

import * as vscode from "vscode";
import {
  type BaseLanguageClient,
  InlineCompletionRequest,
  InlineCompletionTriggerKind,
  type Middleware,
} from "vscode-languageclient";
import { asksAfterAccept, EditorAsks, showAgainIfCursorThere } from "./editorAsks";
import {
  type InlineCompletionMiddleware,
  inlineCompletionMiddleware,
} from "./inlineCompletionMiddleware";
import { modelLoaded } from "./modelLoad";
import { explainNoSuggestions, loadedWithoutWeights } from "./noWeights";
import type { SessionDependencies } from "./sessionDependencies";
import { SuggestionGrowth } from "./suggestionGrowth";

/** The middleware of one client, `client()` once it is made, to be disposed with it. */
export function clientMiddleware(
  deps: SessionDependencies,
  client: () => BaseLanguageClient,
): InlineCompletionMiddleware & Pick<Middleware, "sendRequest"> {
  const { output, statusBar } = deps;
  const editorAsks = new EditorAsks();
  const suggestionPending = (document: vscode.TextDocument, dismiss: () => void) =>
    deps.pendingSuggestions.add(document.uri.toString(), dismiss);
  const growth = new SuggestionGrowth({
    status: statusBar,
    inlineCompletions: () => deps.settings().inlineCompletions,
    serverAnswer: (document, position, selectedItem) =>
      serverAnswer(client(), document, position, selectedItem),
    showAgain: showAgainIfCursorThere,
    watchPlace,
    onActiveEditorChanged: (listener) => vscode.window.onDidChangeActiveTextEditor(listener),
    suggestionPending,
    refreshing: deps.refreshingSuggestion,
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
    suggestionPending,
    editorAsked: (document, position, selectedItem) => {
      growth.editorAsked(document, position, selectedItem);
    },
    answerAtHand: (document, position, selectedItem) =>
      growth.answerToShow(document, position, selectedItem),
    suggestionShown: (document, position, text, selectedItem) => {
      growth.answered(document, position, text, selectedItem);
    },
  });
  return {
    provideInlineCompletionItems: middleware.provideInlineCompletionItems,
    sendRequest: (type, param, token, next) => {
      deps.generatingDocument.requestSent(type, param);
      return next(type, param, token);
    },
    dispose: () => {
      middleware.dispose();
      growth.dispose();
      editorAsks.dispose();
    },
  };
}

/**
 * The server's answer at `position` of `document`, asked as the user would (while it generates
 * there, it answers from the suggestion it grows, without the model), as the editor takes it.
 */
async function serverAnswer(
  client: BaseLanguageClient,
  document: vscode.TextDocument,
  position: vscode.Position,
  selectedItem: vscode.SelectedCompletionInfo | undefined,
): Promise<vscode.InlineCompletionItem[] | vscode.InlineCompletionList | undefined> {
  const converter = client.code2ProtocolConverter;
  const selectedCompletionInfo =
    selectedItem === undefined
      ? undefined
      : { range: converter.asRange(selectedItem.range), text: selectedItem.text };
  const answer = await client.sendRequest(InlineCompletionRequest.type, {
    textDocument: converter.asTextDocumentIdentifier(document),
    position: converter.asPosition(position),
    context: { triggerKind: InlineCompletionTriggerKind.Invoked, selectedCompletionInfo },
  });
  return client.protocol2CodeConverter.asInlineCompletionResult(answer);
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
