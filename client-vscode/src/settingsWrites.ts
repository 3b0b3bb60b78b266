/** A command's change of a `phi3.*` setting, written where the value in force lives. */

import * as vscode from "vscode";
import { RESTRICTED_KEYS, SETTINGS_SECTION } from "./settings";

/**
 * Sets `phi3.<key>` to `value`: in the workspace's settings when VS Code applies a value of
 * the workspace's own (which would shadow a user setting), else in the user's. Restricted Mode
 * ignores the workspace's values of `RESTRICTED_KEYS`. Folder values play no part: the server
 * reads the settings of no particular folder.
 */
export async function writeSetting(key: string, value: unknown): Promise<void> {
  const section = vscode.workspace.getConfiguration(SETTINGS_SECTION);
  const workspaceApplies =
    section.inspect(key)?.workspaceValue !== undefined &&
    (vscode.workspace.isTrusted || !RESTRICTED_KEYS.includes(key));
  await section.update(
    key,
    value,
    workspaceApplies ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global,
  );
}
