/** The Python extension's active environment, when the Python extension is installed. */

import { PythonExtension } from "@vscode/python-extension";
import * as vscode from "vscode";

const PYTHON_EXTENSION_ID = "ms-python.python";

/**
 * The active interpreter's executable, or undefined without the Python extension. Waits for that
 * extension's activation, which may never end: a start limits the wait (pythonExtensionAnswer.ts).
 */
export async function activePythonInterpreter(
  log: vscode.LogOutputChannel,
): Promise<string | undefined> {
  if (vscode.extensions.getExtension(PYTHON_EXTENSION_ID) === undefined) {
    return undefined;
  }
  try {
    const api = await PythonExtension.api();
    const active = api.environments.getActiveEnvironmentPath();
    const resolved = await api.environments.resolveEnvironment(active);
    return resolved?.executable.uri?.fsPath ?? active.path;
  } catch (error) {
    log.warn(`Could not ask the Python extension for its environment: ${String(error)}`);
    return undefined;
  }
}

/** Calls `listener` when the user picks another environment in the Python extension. */
export async function onActivePythonChanged(
  listener: () => void,
): Promise<vscode.Disposable | undefined> {
  if (vscode.extensions.getExtension(PYTHON_EXTENSION_ID) === undefined) {
    return undefined;
  }
  const api = await PythonExtension.api();
  return api.environments.onDidChangeActiveEnvironmentPath(() => {
    listener();
  });
}
