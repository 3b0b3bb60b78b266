/** What the server session, its clients and their middleware work with (from extension.ts). */

import type * as vscode from "vscode";
import type { GeneratingDocument } from "./generatingDocument";
import type { PendingSuggestions } from "./pendingSuggestions";
import type { RefreshingSuggestion } from "./refreshingSuggestion";
import type { ExtensionSettings } from "./settings";
import type { StatusBar } from "./statusBar";

export interface SessionDependencies {
  readonly output: vscode.LogOutputChannel;
  readonly statusBar: StatusBar;
  readonly settings: () => ExtensionSettings;
  /** Suggestions not shown yet, for Escape to turn down. */
  readonly pendingSuggestions: PendingSuggestions;
  /** The document the server generates for, for Escape to stop it there. */
  readonly generatingDocument: GeneratingDocument;
  /** A growing suggestion the editor hides for a moment to show it grown, for Tab to accept. */
  readonly refreshingSuggestion: RefreshingSuggestion<vscode.TextDocument, vscode.Position>;
}
