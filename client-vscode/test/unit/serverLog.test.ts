import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { stderrLineLevel } from "../../src/serverLog";

describe("server stderr levels", () => {
  it("hides records the server also sends as window/logMessage", () => {
    const line = "2026-11-28 03:51:21,006 INFO phi3_lsp.features.loading: smollm2-135m is ready";
    assert.equal(stderrLineLevel(line, false), "debug");
    const warning = "2026-11-28 03:51:21,006 WARNING phi3_lsp.settings: maxNewTokens must be 1-512";
    assert.equal(stderrLineLevel(warning, true), "debug");
  });

  it("keeps warnings as warnings before the server forwards its records", () => {
    const line =
      "2026-11-28 03:51:21,006 WARNING phi3_lsp.logs: Unknown log level 'LOUD', using INFO";
    assert.equal(stderrLineLevel(line, false), "warn");
  });

  it("keeps the warnings of libraries, which the server does not forward", () => {
    const line =
      "2026-11-28 03:51:21,006 WARNING pygls.protocol: Cancel notification for unknown id";
    assert.equal(stderrLineLevel(line, true), "warn");
  });

  it("keeps an error's record with the traceback that follows it, forwarded or not", () => {
    const line = "2026-11-28 03:51:21,006 ERROR phi3_lsp.engine: A background generation failed";
    assert.equal(stderrLineLevel(line, true), "error");
    assert.equal(stderrLineLevel("Traceback (most recent call last):", true), "error");
  });

  it("shows errors, tracebacks and command-line errors as errors", () => {
    assert.equal(
      stderrLineLevel("2026-11-28 03:51:21,006 ERROR phi3_lsp.engine: boom", false),
      "error",
    );
    for (const forwarded of [false, true]) {
      assert.equal(stderrLineLevel("Traceback (most recent call last):", forwarded), "error");
      assert.equal(stderrLineLevel("    raise OSError(errno.ENOENT)", forwarded), "error");
      assert.equal(
        stderrLineLevel("phi3-lsp: error: unrecognized arguments: --stdio", forwarded),
        "error",
      );
    }
  });

  it("does not mistake a message that mentions INFO for a record", () => {
    assert.equal(stderrLineLevel("INFO is not a date", true), "error");
  });
});
