/**
 * How a command's waits show in VS Code (serverCommands.ts): a notification with a Cancel
 * button while it waits for the server's start or for a slow answer, and the status bar's
 * progress while the server works on it.
 */

import * as vscode from "vscode";
import { followSlowAnswerReason } from "./commandAnswer";
import type { ServerStatusSource } from "./modelLoad";
import type { CommandWaitViews } from "./serverCommands";
import { WAITING_TITLE, waitingFor } from "./serverWait";

/** The views of a command's waits; a slow answer's says why from `statusBar`'s status. */
export function commandProgress(statusBar: ServerStatusSource): CommandWaitViews {
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
        async (progress, cancel) => {
          const reason = followSlowAnswerReason(statusBar, command, (message) => {
            progress.report({ message });
          });
          try {
            return await waitUntilAnswered(cancel);
          } finally {
            reason.dispose();
          }
        },
      ),
    working: (progress, reply) =>
      vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: progress },
        () => reply,
      ),
  };
}
