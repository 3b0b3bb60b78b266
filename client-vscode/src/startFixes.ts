/** The notification of a start that failed: what is wrong, with buttons for the ways to fix it. */

import * as vscode from "vscode";

export interface StartFixes {
  /** The interpreter lies in a workspace that Restricted Mode keeps from running it. */
  readonly restricted: boolean;
  readonly output: { show(): void };
  /** Starts the server anew. */
  retry(): Promise<void>;
}

/** Shows `advice` with the fixes that apply, and runs the one the user picks. */
export async function offerStartFixes(advice: string, fixes: StartFixes): Promise<void> {
  const manageTrust = "Manage Workspace Trust";
  const openSettings = "Set phi3.pythonPath";
  const showOutput = "Show output";
  const retry = "Retry";
  const choices = fixes.restricted
    ? [manageTrust, openSettings, showOutput]
    : [openSettings, showOutput, retry];
  const choice = await vscode.window.showErrorMessage(advice, ...choices);
  if (choice === manageTrust) {
    await vscode.commands.executeCommand("workbench.trust.manage");
  } else if (choice === openSettings) {
    await openPythonPathSetting();
  } else if (choice === showOutput) {
    fixes.output.show();
  } else if (choice === retry) {
    await fixes.retry();
  }
}

/**
 * The settings editor at phi3.pythonPath. A remote window (SSH, WSL, a container, code-server)
 * takes that machine setting from its Remote tab only: the User tab would show no such setting.
 */
async function openPythonPathSetting(): Promise<void> {
  const query = "phi3.pythonPath";
  if (vscode.env.remoteName !== undefined) {
    await vscode.commands.executeCommand("workbench.action.openRemoteSettings", { query });
  } else {
    await vscode.commands.executeCommand("workbench.action.openSettings", query);
  }
}
