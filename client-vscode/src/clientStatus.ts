/**
 * What a client tells the status bar: whether its server starts or runs, and the server's own
 * `phi3/status` (its model's load, generation, figures).
 */

import type * as vscode from "vscode";
import { type LanguageClient, State } from "vscode-languageclient/node";
import { isServerStatus, STATUS_NOTIFICATION } from "./protocol";
import type { StatusBar } from "./statusBar";

/**
 * Shows `client`'s state and statuses in `statusBar` while `isCurrent()`: a client given up or
 * replaced may still hear from its process for a while (a start given up finishes its
 * handshake if the process answers within the 2 s before the library ends it, and a stop that
 * times out leaves the connection open as long), and its states and statuses are not those of
 * the server the status bar shows.
 */
export function showClientStatus(
  client: LanguageClient,
  isCurrent: () => boolean,
  statusBar: StatusBar,
  output: vscode.LogOutputChannel,
): void {
  client.onNotification(STATUS_NOTIFICATION, (status: unknown) => {
    if (!isCurrent()) {
      return;
    }
    if (isServerStatus(status)) {
      statusBar.setServerStatus(status);
    } else {
      output.warn(`Ignoring a malformed ${STATUS_NOTIFICATION}: ${JSON.stringify(status)}`);
    }
  });
  client.onDidChangeState(({ newState }) => {
    if (!isCurrent()) {
      return;
    }
    if (newState === State.Running) {
      statusBar.setConnection({ kind: "running" });
    } else if (newState === State.Starting) {
      statusBar.setConnection({ kind: "starting" });
    }
  });
}
