/**
 * How a command's waits show in VS Code (serverCommands.ts): a notification with a Cancel
 * button while it waits for the server's start or for a slow answer, and the status bar's
 * progress while the server works on it.
 */

import * as vscode from "vscode";
import { slowAnswerReason } from "./commandAnswer";
import type { ServerStatus } from "./protocol";
import type { CommandWaitViews } from "./serverCommands";
import { WAITING_TITLE, waitingFor } from "./serverWait";

/** The views of a command's waits; a slow answer's says why from `statusBar`'s status. */
export function commandProgress(statusBar: {
  readonly serverStatus: ServerStatus | undefined;
}): CommandWaitViews {
  return {
    startWait: (commandTitle) => (waitUntilEnded) =>
      vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: WAITING_TITLE, cancellable: true },
        (progress, cancel) => {
          progress.report({ message: waitingFor(commandTitle) });
          return waitUntilEnded(cancel);
        },
      ),
    slowAnswer: (title, command) => (waitUntilAnswered) =>
      vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title, cancellable: true },
        (progress, cancel) => {
          progress.report({ message: slowAnswerReason(statusBar.serverStatus, command) });
          return waitUntilAnswered(cancel);
        },
      ),
    working: (progress, reply) =>
      vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: progress },
        () => reply,
      ),
  };
}
