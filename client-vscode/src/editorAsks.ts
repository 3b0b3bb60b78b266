/**
 * Asking VS Code for inline suggestions again, in the editor where a suggestion's place is:
 * once a late answer is there (inlineCompletionMiddleware.ts), when its editor becomes active
 * again (asksOnReturn.ts), after a suggestion was accepted to its end (suggestionAccepted.ts), and
 * while a suggestion grows (suggestionGrowth.ts); and accepting a suggestion the editor hides
 * for a moment to show it grown (refreshingSuggestion.ts).
 */

import * as vscode from "vscode";
import { AsksOnReturn, type EditorPlace } from "./asksOnReturn";
import { type AcceptedPart, acceptedText, type RefreshingSuggestion } from "./refreshingSuggestion";
import { AsksAfterAccept, acceptedPlace, endOfInsertion } from "./suggestionAccepted";

/** Asks VS Code for inline suggestions at the cursor of the active editor. */
function askAtCursor(): void {
  void vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
}

/**
 * Asks VS Code for inline suggestions if the active editor shows `document` with its cursor
 * alone at `position`; false if it does not.
 */
function askIfCursorThere(document: vscode.TextDocument, position: vscode.Position): boolean {
  const cursorThere = cursorAloneAt(document, position);
  if (cursorThere) {
    askAtCursor();
  }
  return cursorThere;
}

/**
 * Has VS Code show a fresh answer in place of the inline suggestion it shows at `position` of
 * `document`, if the active editor shows it with its cursor alone there and `stillWanted()`
 * when it asks; resolves whether it asked VS Code (its provider is asked next).
 *
 * Asked again at the place and document version of the suggestion it shows, VS Code keeps that
 * one: it answers an automatic request from what it has, and puts the shown suggestion first
 * among the answers to the user's. Hidden first, the fresh answer shows. Nothing else gets it
 * shown: VS Code 1.139 asks its providers again at the same place and version only for a request
 * of the user's after an automatic one, and a provider's change event is proposed API. Neither
 * command closes VS Code's suggest widget: over it, the editor asks again over its selected item.
 */
export async function showAgainIfCursorThere(
  document: vscode.TextDocument,
  position: vscode.Position,
  stillWanted: () => boolean,
): Promise<boolean> {
  if (!cursorAloneAt(document, position)) {
    return false;
  }
  await vscode.commands.executeCommand("editor.action.inlineSuggest.hide");
  return stillWanted() && askIfCursorThere(document, position);
}

/** Whether the active editor shows `document` with its cursor alone at `position`. */
function cursorAloneAt(document: vscode.TextDocument, position: vscode.Position): boolean {
  const editor = vscode.window.activeTextEditor;
  return editor?.document === document && (aloneCursor(editor)?.isEqual(position) ?? false);
}

/** What asksOnReturn.ts reads of `editor`. */
function editorPlace(editor: vscode.TextEditor): EditorPlace<vscode.TextDocument> {
  return {
    document: editor.document,
    version: editor.document.version,
    cursor: aloneCursor(editor),
  };
}

/** The cursor of `editor` when it is alone and selects nothing. */
function aloneCursor(editor: vscode.TextEditor): vscode.Position | undefined {
  const alone = editor.selections.length === 1 && editor.selection.isEmpty;
  return alone ? editor.selection.active : undefined;
}

/**
 * Asks again for answers that came in while another editor was active, once theirs is active
 * again; one per client, disposed with it.
 */
export class EditorAsks implements vscode.Disposable {
  private readonly onReturn = new AsksOnReturn<vscode.TextDocument>();
  private readonly subscriptions: vscode.Disposable;

  constructor() {
    this.subscriptions = vscode.Disposable.from(
      vscode.window.onDidChangeActiveTextEditor((editor) => {
        if (editor !== undefined && this.onReturn.editorActivated(editorPlace(editor))) {
          askAtCursor();
        }
      }),
      vscode.window.onDidChangeTextEditorSelection(({ textEditor }) => {
        if (
          textEditor === vscode.window.activeTextEditor &&
          this.onReturn.cursorChanged(editorPlace(textEditor))
        ) {
          askAtCursor();
        }
      }),
      vscode.workspace.onDidCloseTextDocument((document) => {
        this.onReturn.documentClosed(document);
      }),
    );
  }

  /**
   * Asks for inline suggestions again at `position` of `document`: now if its cursor is there
   * in the active editor, else when its editor becomes active again with the cursor there and
   * the document unchanged.
   */
  askAgain(document: vscode.TextDocument, position: vscode.Position): void {
    if (askIfCursorThere(document, position)) {
      return;
    }
    if (vscode.window.activeTextEditor?.document !== document) {
      this.onReturn.answeredElsewhere(document, document.version, position);
    }
  }

  dispose(): void {
    this.subscriptions.dispose();
  }
}

/** The asks after an accept on their way, for the middleware of whichever client is running. */
export const asksAfterAccept = new AsksAfterAccept();

/**
 * The command each suggestion carries (suggestionAccepted.ts): asks again at the end of the
 * accepted suggestion if the active editor shows its document with the cursor there, unless
 * the user has turned VS Code's own inline suggestions off (they ask by hand).
 */
export function askAgainAfterAccept(...args: unknown[]): void {
  const accepted = acceptedPlace(args);
  const editor = vscode.window.activeTextEditor;
  if (accepted === undefined || editor?.document.uri.toString() !== accepted.uri) {
    return;
  }
  const editorSettings = vscode.workspace.getConfiguration("editor", editor.document);
  if (!editorSettings.get<boolean>("inlineSuggest.enabled", true)) {
    return;
  }
  if (
    cursorAloneAt(editor.document, new vscode.Position(accepted.end.line, accepted.end.character))
  ) {
    asksAfterAccept.asked(accepted.uri, accepted.end);
    askAtCursor();
  }
}

/** What the keys do without a suggestion: Tab's, and Ctrl+Right's (Cmd+Right's on a Mac). */
const KEY_COMMANDS: Record<AcceptedPart, string> = {
  all: "tab",
  word: process.platform === "darwin" ? "cursorEnd" : "cursorWordEndRight",
};

/**
 * Tab ("all") or Ctrl+Right ("word") while the editor hides a growing suggestion to show it
 * grown: inserts what VS Code would have accepted of the text shown, puts the cursor after it and
 * asks for the rest, as accepting it does; if the editor has moved on (an edit, another cursor)
 * or the key accepts nothing there, does what the key does without a suggestion.
 */
export async function acceptRefreshing(
  refreshing: RefreshingSuggestion<vscode.TextDocument, vscode.Position>,
  part: AcceptedPart,
): Promise<void> {
  const shown = refreshing.take();
  const editor = vscode.window.activeTextEditor;
  const text =
    shown !== undefined &&
    editor?.document === shown.document &&
    shown.document.version === shown.version &&
    cursorAloneAt(shown.document, shown.position)
      ? acceptedText(
          shown.text,
          part,
          shown.document.lineAt(shown.position.line).text.slice(0, shown.position.character),
          typeof editor.options.tabSize === "number" ? editor.options.tabSize : 4,
        )
      : undefined;
  if (editor === undefined || shown === undefined || !text) {
    await vscode.commands.executeCommand(KEY_COMMANDS[part]);
    return;
  }
  const { document, position } = shown;
  const inserted = await editor.edit((edit) => {
    edit.insert(position, text);
  });
  if (!inserted) {
    return;
  }
  const end = endOfInsertion(position, text);
  const cursor = new vscode.Position(end.line, end.character);
  editor.selection = new vscode.Selection(cursor, cursor);
  editor.revealRange(new vscode.Range(cursor, cursor));
  askAgainAfterAccept(document.uri.toString(), end.line, end.character);
}
