import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  checkServerInstalled,
  chooseInterpreter,
  DEFAULT_PYTHON,
  expandPath,
  installAdvice,
  restrictedFolder,
} from "../../src/pythonInterpreter";

const PLACES = { home: "/home/me", workspaceFolder: "/work/project" } as const;

/** An executable shell script `python` running `body`. */
function interpreterScript(body: string): string {
  const dir = mkdtempSync(join(tmpdir(), "phi3-python-"));
  const path = join(dir, "python");
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

/** A python3 that sees no site-packages: a real interpreter without phi3_lsp. */
function bareInterpreter(): string {
  return interpreterScript('exec python3 -S "$@"');
}

/** A real python3 that reports itself as 3.10 to the code it runs with `-c`. */
function python310(): string {
  const pretend = "import sys; sys.version_info = (3, 10, 12); sys.version = '3.10.12 (main)'";
  return interpreterScript(`exec python3 -S -c "${pretend}; exec(sys.argv[1])" "$2"`);
}

describe("choosing the interpreter", () => {
  it("prefers phi3.pythonPath", () => {
    assert.deepEqual(chooseInterpreter(" /venv/bin/python ", "/usr/bin/python3.12", PLACES), {
      command: "/venv/bin/python",
      source: "phi3.pythonPath",
    });
  });

  it("then the Python extension's active environment", () => {
    assert.deepEqual(chooseInterpreter("", "/home/me/.venv/bin/python", PLACES), {
      command: "/home/me/.venv/bin/python",
      source: "Python extension",
    });
  });

  it("then python3", () => {
    assert.deepEqual(chooseInterpreter("", undefined, PLACES), {
      command: DEFAULT_PYTHON,
      source: "default",
    });
  });

  it("finds phi3.pythonPath under ~, ${userHome} and ${workspaceFolder}", () => {
    assert.equal(
      chooseInterpreter("~/.venv/bin/python", undefined, PLACES).command,
      "/home/me/.venv/bin/python",
    );
    assert.equal(
      chooseInterpreter("${workspaceFolder}/.venv/bin/python", undefined, PLACES).command,
      "/work/project/.venv/bin/python",
    );
    assert.equal(expandPath("${userHome}/py/bin/python", PLACES), "/home/me/py/bin/python");
    // A "$" in a folder's name is kept as it is.
    const dollars = { home: "/home/a$$b", workspaceFolder: "/work/c$&d" };
    assert.equal(expandPath("~/bin/python", dollars), "/home/a$$b/bin/python");
    assert.equal(expandPath("${workspaceFolder}/python", dollars), "/work/c$&d/python");
    // Only a leading ~ is the home folder; a variable without a value stays as written.
    assert.equal(expandPath("/opt/~py/bin/python", PLACES), "/opt/~py/bin/python");
    assert.equal(
      expandPath("${workspaceFolder}/bin/python", { home: "/home/me", workspaceFolder: undefined }),
      "${workspaceFolder}/bin/python",
    );
  });
});

describe("Restricted Mode", () => {
  const folders = ["/work/project", "/work/other"];
  const from = (command: string) => ({ command, source: "Python extension" as const });

  it("names the workspace folder that holds the interpreter", () => {
    assert.equal(restrictedFolder(from("/work/project/.venv/bin/python"), folders), folders[0]);
    assert.equal(restrictedFolder(from("/work/other/../other/py/python"), folders), folders[1]);
    assert.equal(restrictedFolder(from("/work/project/..venv/bin/python"), folders), folders[0]);
  });

  it("sees through a link to the workspace, not through the venv's link to the system", () => {
    const root = mkdtempSync(join(tmpdir(), "phi3-trust-"));
    const project = join(root, "project");
    mkdirSync(join(project, ".venv", "bin"), { recursive: true });
    symlinkSync("/usr/bin/python3", join(project, ".venv", "bin", "python"));
    symlinkSync(project, join(root, "linked"));
    // The Python extension may name the venv through another path than the folder's.
    const venvPython = from(join(root, "linked", ".venv", "bin", "python"));
    assert.equal(restrictedFolder(venvPython, [project]), project);
    assert.equal(restrictedFolder(from(join(project, ".venv/bin/python")), [project]), project);
  });

  it("runs interpreters outside the workspace, and bare commands found on PATH", () => {
    assert.equal(restrictedFolder(from("/home/me/.venv/bin/python"), folders), undefined);
    assert.equal(restrictedFolder(from("/work/project-venv/bin/python"), folders), undefined);
    assert.equal(restrictedFolder(from("/work/project/../venv/bin/python"), folders), undefined);
    assert.equal(restrictedFolder(from("python3"), folders), undefined);
  });

  it("advises trusting the workspace or a user-level phi3.pythonPath", () => {
    const advice = installAdvice(
      { kind: "restricted", detail: "/work/project" },
      from("/work/project/.venv/bin/python"),
    );
    assert.match(advice, /\/work\/project\/\.venv\/bin\/python \(from Python extension\)/);
    assert.match(advice, /Restricted Mode/);
    assert.match(advice, /Trust the workspace, or set phi3\.pythonPath in your user settings/);
  });
});

describe("checking that phi3_lsp is installed", () => {
  it("tells a missing interpreter apart, naming the setting once", async () => {
    const check = await checkServerInstalled("/nonexistent/bin/python3");
    assert.equal(check.kind, "no-python");
    const interpreter = { command: "/nonexistent/bin/python3", source: "phi3.pythonPath" } as const;
    const advice = installAdvice(check, interpreter);
    assert.match(
      advice,
      /^Phi-3: cannot run Python \/nonexistent\/bin\/python3 \(from phi3\.pythonPath\)/,
    );
    assert.equal(advice.split("Set phi3.pythonPath").length, 2, advice);
    assert.match(advice, /make install/);
  });

  it("tells a Python older than 3.11 apart, with its version", async () => {
    const check = await checkServerInstalled(python310());
    assert.deepEqual(check, { kind: "old-python", detail: "3.10.12" });
    const interpreter = { command: "/usr/bin/python3.10", source: "phi3.pythonPath" } as const;
    const advice = installAdvice(check, interpreter);
    assert.match(advice, /is Python 3\.10\.12; the server needs Python 3\.11 or newer/);
    assert.doesNotMatch(advice, /not installed/);
  });

  it("says so when the interpreter does not answer in time", async () => {
    const check = await checkServerInstalled(interpreterScript("sleep 5"), 1000);
    assert.deepEqual(check, { kind: "no-answer", detail: "1 s" });
    const advice = installAdvice(check, { command: "/slow/python", source: "default" });
    assert.match(advice, /\/slow\/python \(from default\) gave no answer within 1 s/);
    assert.doesNotMatch(advice, /pip install/);
  });

  it("tells a Python without the package apart", async () => {
    const check = await checkServerInstalled(bareInterpreter());
    assert.equal(check.kind, "not-installed");
  });

  it(
    "finds the package in the project's environment",
    { skip: process.env.PHI3_LSP_PYTHON === undefined && "PHI3_LSP_PYTHON is not set" },
    async () => {
      const check = await checkServerInstalled(process.env.PHI3_LSP_PYTHON ?? "");
      assert.deepEqual(check, { kind: "installed" });
    },
  );

  it("advises how to install and how to point the extension elsewhere", () => {
    const interpreter = { command: "/usr/bin/python3", source: "default" } as const;
    const advice = installAdvice({ kind: "not-installed", detail: "..." }, interpreter);
    assert.match(advice, /phi3_lsp package is not installed for \/usr\/bin\/python3/);
    assert.match(advice, /pip install -e/);
    assert.match(advice, /make install/);
    assert.match(advice, /phi3\.pythonPath/);
  });

  it("quotes the error line of a failed import", () => {
    const interpreter = { command: "python3", source: "default" } as const;
    const detail =
      'Traceback (most recent call last):\n  File "<string>", line 1\nImportError: libtorch missing\n';
    const advice = installAdvice({ kind: "failed", detail }, interpreter);
    assert.match(advice, /failed: ImportError: libtorch missing\./);
  });
});
