/**
 * Has the server read the prompt where the cursor rests (`phi3/readAtCursor`), so that the first
 * suggestion at a new place does not wait for the text before it to be read. When to ask is
 * in cursorRest.ts; this module connects it to the editor and the client.
 */

import * as vscode from "vscode";
import type { LanguageClient } from "vscode-languageclient/node";
import { CursorRest } from "./cursorRest";
import { isReadAtCursorResult, READ_AT_CURSOR_REQUEST } from "./protocol";
import type { ExtensionSettings } from "./settings";

export interface CursorReadDependencies {
  /** The documents the server completes. */
  readonly selector: vscode.DocumentSelector;
  /** The client, when one is running. */
  readonly client: () => LanguageClient | undefined;
  readonly settings: () => ExtensionSettings;
  readonly output: vscode.LogOutputChannel;
}

/** A lone cursor in a document the server completes. */
interface CursorPlace {
  readonly document: vscode.TextDocument;
  readonly position: vscode.Position;
}

/** Sends `phi3/readAtCursor` wherever the cursor comes to rest, until disposed. */
export function readWhereTheCursorRests(deps: CursorReadDependencies): vscode.Disposable {
  const rest = new CursorRest<CursorPlace>((place) => {
    readAt(place, deps);
  });
  const placeOf = (editor: vscode.TextEditor, selections: readonly vscode.Selection[]) =>
    cursorPlace(editor, selections, deps.selector);
  return vscode.Disposable.from(
    vscode.window.onDidChangeTextEditorSelection((event) => {
      rest.moved(placeOf(event.textEditor, event.selections));
    }),
    // Opening a file or switching to it puts the cursor at a place without moving it.
    vscode.window.onDidChangeActiveTextEditor((editor) => {
      rest.moved(editor && placeOf(editor, editor.selections));
    }),
    rest,
  );
}

/** The place of `editor`'s cursor, if it has one lone cursor in a document of `selector`. */
function cursorPlace(
  editor: vscode.TextEditor,
  selections: readonly vscode.Selection[],
  selector: vscode.DocumentSelector,
): CursorPlace | undefined {
  const [selection, ...others] = selections;
  if (
    selection === undefined ||
    others.length > 0 ||
    !selection.isEmpty ||
    vscode.languages.match(selector, editor.document) === 0
  ) {
    return undefined;
  }
  return { document: editor.document, position: selection.active };
}

/** Asks the server to read the prompt at `place`; the answer only says what it read. A
 * suggestion asked meanwhile stops the read on the server. */
function readAt({ document, position }: CursorPlace, deps: CursorReadDependencies): void {
  const client = deps.client();
  const settings = deps.settings();
  if (
    !client?.isRunning() ||
    !settings.readAtCursor ||
    !settings.inlineCompletions ||
    document.isClosed
  ) {
    return;
  }
  const params = client.code2ProtocolConverter.asTextDocumentPositionParams(document, position);
  client.sendRequest(READ_AT_CURSOR_REQUEST, params).then(
    (result: unknown) => {
      if (isReadAtCursorResult(result) && result.readTokens > 0) {
        deps.output.debug(`Read ${String(result.readTokens)} tokens before the cursor`);
      }
    },
    (error: unknown) => {
      deps.output.debug(`${READ_AT_CURSOR_REQUEST}: ${String(error)}`);
    },
  );
}
