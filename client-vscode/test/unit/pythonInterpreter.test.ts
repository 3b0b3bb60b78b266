import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  checkServerInstalled,
  chooseInterpreter,
  DEFAULT_PYTHON,
  installAdvice,
} from "../../src/pythonInterpreter";

/** A python3 that sees no site-packages: a real interpreter without phi3_lsp. */
function bareInterpreter(): string {
  const dir = mkdtempSync(join(tmpdir(), "phi3-bare-python-"));
  const path = join(dir, "python");
  writeFileSync(path, '#!/bin/sh\nexec python3 -S "$@"\n');
  chmodSync(path, 0o755);
  return path;
}

describe("choosing the interpreter", () => {
  it("prefers phi3.pythonPath", () => {
    assert.deepEqual(chooseInterpreter(" /venv/bin/python ", "/usr/bin/python3.12"), {
      command: "/venv/bin/python",
      source: "phi3.pythonPath",
    });
  });

  it("then the Python extension's active environment", () => {
    assert.deepEqual(chooseInterpreter("", "/home/me/.venv/bin/python"), {
      command: "/home/me/.venv/bin/python",
      source: "Python extension",
    });
  });

  it("then python3", () => {
    assert.deepEqual(chooseInterpreter("", undefined), {
      command: DEFAULT_PYTHON,
      source: "default",
    });
  });
});

describe("checking that phi3_lsp is installed", () => {
  it("tells a missing interpreter apart", async () => {
    const check = await checkServerInstalled("/nonexistent/bin/python3");
    assert.equal(check.kind, "no-python");
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
