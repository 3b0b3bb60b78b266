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
      "Phi-3 read the model's 7.45 GB of weights in 205.3 ms (36.3 GB/s): each token reads " +
        "them all, so no decode pass can take less.",
    );
  });

  void it("sets the last completion's decode passes beside it", () => {
    const last = { lastTokens: 50, lastDecodeMs: 10143, lastDecodePasses: 49 };
    const status: ServerStatus = { ...readyStatus("smollm2-135m"), ...last };
    assert.match(
      describeWeightReads(reads, status),
      / Last completion: 207\.0 ms a token, 207\.0 ms a pass \(49 tokens in 49 passes\)\.$/,
    );
  });

  void it("says that a pass checking drafted tokens can beat the floor per token", () => {
    const last = { lastTokens: 50, lastDecodeMs: 1000, lastDecodePasses: 5 };
    const status: ServerStatus = { ...readyStatus("smollm2-135m"), ...last };
    assert.match(
      describeWeightReads(reads, status),
      / Last completion: 20\.4 ms a token, 200\.0 ms a pass \(49 tokens in 5 passes, checking drafted tokens\)\.$/,
    );
  });

  void it("says nothing of a last completion before there was one", () => {
    const status: ServerStatus = {
      ...readyStatus("smollm2-135m"),
      lastDecodeMs: null,
      lastDecodePasses: null,
    };
    assert.doesNotMatch(describeWeightReads(reads, status), /Last completion/);
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
