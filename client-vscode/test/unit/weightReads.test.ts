import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isWeightReads, type ServerStatus } from "../../src/protocol";
import { describeWeightReads } from "../../src/weightReads";
import { readyStatus } from "./statusFixtures";

// Phi-3-mini-sized in fp32 (bf16-held weights) on a 2-core server CPU.
const reads = { bytesRead: 7_445_000_000, seconds: 0.2053, bytesPerSecond: 36.25e9, tries: 3 };

void describe("describeWeightReads", () => {
  void it("gives the weights' size, their read time and speed as the floor of a pass", () => {
    assert.equal(
      describeWeightReads(reads),
      "Phi-3: the model's weights (7.45 GB) read in 205.3 ms here (36.3 GB/s, the fastest of " +
        "3 reads). Each generated token reads every weight once, so no decode pass can take " +
        "less than 205.3 ms.",
    );
  });

  void it("sets the last completion's decode passes beside it", () => {
    const last = { lastTokens: 50, lastDecodeMs: 10143, lastDecodePasses: 49 };
    const status: ServerStatus = { ...readyStatus("smollm2-135m"), ...last };
    assert.match(
      describeWeightReads(reads, status),
      / The last completion decoded 49 tokens in 49 passes: 207\.0 ms a pass, 207\.0 ms a token\.$/,
    );
  });

  void it("says that a pass checking drafted tokens can beat the floor per token", () => {
    const last = { lastTokens: 50, lastDecodeMs: 1000, lastDecodePasses: 5 };
    const status: ServerStatus = { ...readyStatus("smollm2-135m"), ...last };
    assert.match(
      describeWeightReads(reads, status),
      /in 5 passes: 200\.0 ms a pass, 20\.4 ms a token \(a pass can check several drafted tokens at once\)\.$/,
    );
  });

  void it("says nothing of a last completion before there was one", () => {
    const status: ServerStatus = {
      ...readyStatus("smollm2-135m"),
      lastDecodeMs: null,
      lastDecodePasses: null,
    };
    assert.doesNotMatch(describeWeightReads(reads, status), /last completion/);
  });
});

void describe("isWeightReads", () => {
  void it("takes the documented result and refuses others", () => {
    assert.ok(isWeightReads(reads));
    assert.ok(!isWeightReads({ ...reads, seconds: 0 }));
    assert.ok(!isWeightReads({ bytesRead: 1 }));
    assert.ok(!isWeightReads(null));
  });
});
