/** What the server session, its clients and their middleware work with (from extension.ts). */

import type * as vscode from "vscode";
import type { PendingSuggestions } from "./pendingSuggestions";
import type { ExtensionSettings } from "./settings";
import type { StatusBar } from "./statusBar";

export interface SessionDependencies {
  readonly output: vscode.LogOutputChannel;
  readonly statusBar: StatusBar;
  readonly settings: () => ExtensionSettings;
  /** Suggestions not shown yet, for Escape to turn down. */
  readonly pendingSuggestions: PendingSuggestions;
}
