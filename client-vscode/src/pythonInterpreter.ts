/**
 * Which Python runs the server, and whether `phi3_lsp` is installed there.
 *
 * Plain module (Node only, no VS Code API): the Python extension's active environment is passed in.
 */

import { execFile } from "node:child_process";
import { realpathSync } from "node:fs";
import * as path from "node:path";

export type InterpreterSource = "phi3.pythonPath" | "Python extension" | "default";

export interface Interpreter {
  readonly command: string;
  readonly source: InterpreterSource;
}

/** The fallback when neither the setting nor the Python extension names an interpreter. */
export const DEFAULT_PYTHON = process.platform === "win32" ? "python" : "python3";

/** Where `~`, `${userHome}` and `${workspaceFolder}` in phi3.pythonPath point. */
export interface PathPlaces {
  readonly home: string;
  /** The first workspace folder; undefined in a window without one. */
  readonly workspaceFolder: string | undefined;
}

/** The setting wins, then the Python extension's active environment, then `python3`. */
export function chooseInterpreter(
  pythonPath: string,
  activeEnvironment: string | undefined,
  places: PathPlaces,
): Interpreter {
  if (pythonPath.trim() !== "") {
    return { command: expandPath(pythonPath.trim(), places), source: "phi3.pythonPath" };
  }
  if (activeEnvironment !== undefined && activeEnvironment.trim() !== "") {
    return { command: activeEnvironment.trim(), source: "Python extension" };
  }
  return { command: DEFAULT_PYTHON, source: "default" };
}

/**
 * `path` with a leading `~` and the variables VS Code users write in settings replaced (VS Code
 * does not replace them in an extension's settings). A variable with no value stays as it is.
 */
export function expandPath(path: string, places: PathPlaces): string {
  // Replacement functions: a "$" in a folder's name must not read as a replacement pattern.
  const { home, workspaceFolder } = places;
  let expanded = path.replace(/^~(?=$|[\\/])/, () => home).replaceAll("${userHome}", () => home);
  if (workspaceFolder !== undefined) {
    expanded = expanded.replaceAll("${workspaceFolder}", () => workspaceFolder);
  }
  return expanded;
}

/**
 * In Restricted Mode, the workspace folder that holds `interpreter` (a virtual environment
 * there runs the workspace's own code: its site-packages, its `.pth` files), else undefined.
 * Folders are compared as written and with their links resolved (`/tmp` is `/private/tmp` on
 * macOS); the interpreter's own link is not followed: a venv's `python` links to the system's.
 * A bare command such as `python3` is left to PATH (which a shell with the workspace's venv
 * activated would lead into it: that choice was the user's).
 */
export function restrictedFolder(
  interpreter: Interpreter,
  workspaceFolders: readonly string[],
): string | undefined {
  const { command } = interpreter;
  if (!path.isAbsolute(command)) {
    return undefined;
  }
  const resolvedCommand = path.join(realPath(path.dirname(command)), path.basename(command));
  return workspaceFolders.find(
    (folder) => isInside(command, folder) || isInside(resolvedCommand, realPath(folder)),
  );
}

function isInside(file: string, folder: string): boolean {
  const relative = path.relative(folder, file);
  const outside = relative === ".." || relative.startsWith(`..${path.sep}`);
  return relative !== "" && !outside && !path.isAbsolute(relative);
}

function realPath(file: string): string {
  try {
    return realpathSync.native(file);
  } catch {
    return file; // not there (yet): compared as written
  }
}

export type InstallCheck =
  | { readonly kind: "installed" }
  | { readonly kind: "restricted"; readonly detail: string }
  | { readonly kind: "no-python"; readonly detail: string }
  | { readonly kind: "old-python"; readonly detail: string }
  | { readonly kind: "no-answer"; readonly detail: string }
  | { readonly kind: "not-installed"; readonly detail: string }
  | { readonly kind: "failed"; readonly detail: string };

const OLD_PYTHON = /phi3-lsp needs Python 3\.11 or newer, not (\S+)/;

/**
 * The server's version check and import, as the server will run: without the folder it runs
 * in on the module path (`-P`, which Python 3.10 does not know). `phi3_lsp/__init__.py`
 * imports nothing heavy, so this answers in well under a second.
 */
const IMPORT_PROBE = [
  "import sys",
  "if sys.version_info < (3, 11):",
  "    sys.exit('phi3-lsp needs Python 3.11 or newer, not ' + sys.version.split()[0])",
  "del sys.path[0]",
  "import phi3_lsp",
].join("\n");

/**
 * Runs the import probe with `python` to tell a missing interpreter, a too old one and a
 * missing package apart before the language client starts (and would restart) a server that
 * cannot run.
 */
export function checkServerInstalled(python: string, timeoutMs = 20_000): Promise<InstallCheck> {
  return new Promise((resolve) => {
    execFile(python, ["-c", IMPORT_PROBE], { timeout: timeoutMs }, (error, _stdout, stderr) => {
      if (error === null) {
        resolve({ kind: "installed" });
        return;
      }
      const detail = stderr.trim() || error.message;
      const code = (error as NodeJS.ErrnoException).code;
      const oldVersion = OLD_PYTHON.exec(stderr)?.[1];
      if (code === "ENOENT" || code === "EACCES") {
        resolve({ kind: "no-python", detail: `${python}: ${code}` });
      } else if (error.killed) {
        resolve({ kind: "no-answer", detail: `${Math.round(timeoutMs / 1000)} s` });
      } else if (oldVersion !== undefined) {
        resolve({ kind: "old-python", detail: oldVersion });
      } else if (stderr.includes("ModuleNotFoundError: No module named 'phi3_lsp'")) {
        resolve({ kind: "not-installed", detail });
      } else {
        resolve({ kind: "failed", detail });
      }
    });
  });
}

/**
 * One actionable sentence for a failed check: what is wrong with which interpreter and how to
 * fix it (install the package there, or point `phi3.pythonPath` at an environment that has it).
 */
export function installAdvice(check: InstallCheck, interpreter: Interpreter): string {
  const where = `${interpreter.command} (from ${interpreter.source})`;
  const fix =
    "Install the server with `pip install -e <phi3-lsp repository>` (or `make install` in the " +
    "repository, which creates .venv), or set phi3.pythonPath to a Python that has it.";
  switch (check.kind) {
    case "installed":
      return `The Phi-3 server is installed for ${where}.`;
    case "no-python":
      return (
        `Phi-3: cannot run Python ${where}. Set phi3.pythonPath to a Python 3.11+ that has ` +
        "phi3_lsp installed (`make install` in the phi3-lsp repository makes one in .venv)."
      );
    case "no-answer":
      return (
        `Phi-3: ${where} gave no answer within ${check.detail} when asked to import phi3_lsp ` +
        '(a slow disk, or an import that hangs). Check that it runs, then use "Phi-3: Restart server".'
      );
    case "old-python":
      return (
        `Phi-3: ${where} is Python ${check.detail}; the server needs Python 3.11 or newer. ` +
        "Set phi3.pythonPath to a Python 3.11+ interpreter that has phi3_lsp installed."
      );
    case "not-installed":
      return `Phi-3: the phi3_lsp package is not installed for ${where}. ${fix}`;
    case "restricted":
      return (
        `Phi-3: ${where} lies inside the workspace folder ${check.detail}, and the workspace is ` +
        "in Restricted Mode, so it is not run. Trust the workspace, or set phi3.pythonPath in " +
        "your user settings (the Remote tab in a remote window) to a Python 3.11+ outside it " +
        "that has phi3_lsp installed."
      );
    case "failed":
      return `Phi-3: importing phi3_lsp with ${where} failed: ${errorLine(check.detail)}. ${fix}`;
  }
}

/** Python tracebacks end with the line that names the error. */
function errorLine(detail: string): string {
  const lines = detail.split(/\r?\n/).filter((line) => line.trim() !== "");
  return lines.at(-1) ?? detail;
}
