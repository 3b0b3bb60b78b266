import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { stderrLineLevel } from "../../src/serverLog";

describe("server stderr levels", () => {
  it("hides records the server also sends as window/logMessage", () => {
    const line = "2026-11-28 03:51:21,006 INFO phi3_lsp.features.loading: smollm2-135m is ready";
    assert.equal(stderrLineLevel(line), "debug");
  });

  it("keeps warnings as warnings", () => {
    const line = "2026-11-28 03:51:21,006 WARNING phi3_lsp.settings: maxNewTokens must be 1-512";
    assert.equal(stderrLineLevel(line), "warn");
  });

  it("shows errors, tracebacks and command-line errors as errors", () => {
    assert.equal(stderrLineLevel("2026-11-28 03:51:21,006 ERROR phi3_lsp.engine: boom"), "error");
    assert.equal(stderrLineLevel("Traceback (most recent call last):"), "error");
    assert.equal(stderrLineLevel("    raise OSError(errno.ENOENT)"), "error");
    assert.equal(stderrLineLevel("phi3-lsp: error: unrecognized arguments: --stdio"), "error");
  });

  it("does not mistake a message that mentions INFO for a record", () => {
    assert.equal(stderrLineLevel("INFO is not a date"), "error");
  });
});
