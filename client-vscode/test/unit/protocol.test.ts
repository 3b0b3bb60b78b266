import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isServerStatus } from "../../src/protocol";

const loading = {
  state: "loading",
  model: "smollm2-135m",
  message: "Loading weights",
  percentage: 40,
  weightsLoaded: false,
  lastLatencyMs: null,
  lastTokensPerSecond: null,
  lastTokens: null,
};

describe("phi3/status payload check", () => {
  it("accepts the documented example", () => {
    assert.equal(isServerStatus(loading), true);
    assert.equal(
      isServerStatus({ ...loading, state: "ready", lastLatencyMs: 812.5, lastTokens: 50 }),
      true,
    );
    assert.equal(isServerStatus({ ...loading, weights: "int4" }), true);
    assert.equal(isServerStatus({ ...loading, weights: null }), true);
  });

  it("rejects unknown states and wrong types", () => {
    assert.equal(isServerStatus({ ...loading, state: "sleeping" }), false);
    assert.equal(isServerStatus({ ...loading, percentage: "40" }), false);
    assert.equal(isServerStatus({ ...loading, weightsLoaded: undefined }), false);
    assert.equal(isServerStatus({ ...loading, weights: 4 }), false);
    assert.equal(isServerStatus([loading]), false);
    assert.equal(isServerStatus(undefined), false);
  });
});
