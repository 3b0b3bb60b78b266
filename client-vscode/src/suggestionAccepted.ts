/**
 * Asking for the rest of a continuation once a suggestion has been accepted to its end.
 *
 * The server answers with the first part of a continuation (phi3.answerBudgetMs) and keeps
 * generating the rest, which the next request at the suggestion's end gets at once. VS Code
 * asks again by itself after Tab, but not after the last word taken with "Accept Next Word"
 * (Ctrl+Right): that ends the suggestion with the same accept as Tab, from a command VS Code
 * does not count as typing. And its requests after the earlier words keep showing the item it
 * has, not the longer answer. Each suggestion therefore carries a command, which VS Code runs
 * after inserting it whole (Tab, or the last word), and which asks again at its end. VS Code sends
 * that ask as one the user made; the request it brings waits out the debounce as typing's do
 * (`AsksAfterAccept`), so that typing on after Tab sends nothing.
 *
 * Plain module (no VS Code API).
 */

import type * as vscode from "vscode";
import { answerItems } from "./answerItems";

/** Registered by the extension; not in the command palette. */
export const SUGGESTION_ACCEPTED_COMMAND = "phi3.suggestionAccepted";

/** What an inline completion provider answers. */
type InlineCompletionResult =
  vscode.InlineCompletionItem[] | vscode.InlineCompletionList | null | undefined;

/** A place in a document, as VS Code's `Position` has it. */
export interface Place {
  readonly line: number;
  readonly character: number;
}

/** Where the cursor is after `text` is inserted at `start`. */
export function endOfInsertion(start: Place, text: string): Place {
  const lines = text.split(/\r\n|\r|\n/);
  const last = lines[lines.length - 1] ?? "";
  return lines.length === 1
    ? { line: start.line, character: start.character + last.length }
    : { line: start.line + lines.length - 1, character: last.length };
}

/**
 * Gives each plain-text item of `result`, answered at `position` in the document at `uri`, the
 * command that asks again at its end once it is accepted. Items with a command of their own
 * keep it.
 */
export function withAcceptedCommand(
  result: InlineCompletionResult,
  uri: string,
  position: Place,
): InlineCompletionResult {
  for (const item of answerItems(result)) {
    if (typeof item.insertText !== "string" || item.command !== undefined) {
      continue;
    }
    const end = endOfInsertion(item.range?.start ?? position, item.insertText);
    item.command = {
      command: SUGGESTION_ACCEPTED_COMMAND,
      title: "Ask for the rest of the continuation",
      arguments: [uri, end.line, end.character],
    };
  }
  return result;
}

/** The document and the place the command's arguments name, if they have that shape. */
export function acceptedPlace(args: readonly unknown[]): { uri: string; end: Place } | undefined {
  const [uri, line, character] = args;
  if (typeof uri !== "string" || typeof line !== "number" || typeof character !== "number") {
    return undefined;
  }
  return { uri, end: { line, character } };
}

/**
 * The place of the last ask after an accept, until the request it brings: that request is
 * debounced as an automatic one, though VS Code sends it as the user's.
 */
export class AsksAfterAccept {
  private place: { uri: string; end: Place } | undefined;

  /** An ask at `end` of the document at `uri` is on its way. */
  asked(uri: string, end: Place): void {
    this.place = { uri, end };
  }

  /** Whether a request at `at` in the document at `uri` is the one the last ask brings. */
  take(uri: string, at: Place): boolean {
    const place = this.place;
    this.place = undefined;
    return place?.uri === uri && place.end.line === at.line && place.end.character === at.character;
  }
}
