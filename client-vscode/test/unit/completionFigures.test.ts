import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CompletionFigures } from "../../src/completionFigures";
import type { ServerStatus } from "../../src/protocol";
import { readyStatus } from "./statusFixtures";

const ready = readyStatus("smollm2-135m");

function finished(latencyMs: number, tokens: number): ServerStatus {
  return { ...ready, lastLatencyMs: latencyMs, lastTokensPerSecond: 20.5, lastTokens: tokens };
}

describe("last completion figures", () => {
  it("pairs the round trip with the server figures that arrived just before the answer", () => {
    const figures = new CompletionFigures();
    figures.serverStatusArrived({ ...ready, state: "generating" });
    figures.serverStatusArrived(finished(812, 9));
    figures.requestFinished(840, false);
    assert.equal(figures.serverStatus?.lastLatencyMs, 812);
    assert.equal(figures.roundTripMs, 840);
  });

  it("drops the round trip once the server reports a later completion", () => {
    const figures = new CompletionFigures();
    figures.serverStatusArrived(finished(812, 9));
    figures.requestFinished(840, false);
    figures.serverStatusArrived(finished(2950, 50));
    assert.equal(figures.serverStatus?.lastLatencyMs, 2950);
    assert.equal(figures.roundTripMs, undefined);
  });

  it("keeps the round trip through state changes that carry the same figures", () => {
    const figures = new CompletionFigures();
    figures.serverStatusArrived(finished(812, 9));
    figures.requestFinished(840, false);
    figures.serverStatusArrived({ ...finished(812, 9), state: "generating" });
    figures.serverStatusArrived(finished(812, 9));
    assert.equal(figures.roundTripMs, 840);
  });

  it("ignores the round trip of a cancelled request", () => {
    const figures = new CompletionFigures();
    figures.serverStatusArrived(finished(812, 9));
    figures.requestFinished(840, false);
    figures.requestFinished(120, true);
    assert.equal(figures.roundTripMs, 840);
  });

  it("forgets everything when the server process goes away", () => {
    const figures = new CompletionFigures();
    figures.serverStatusArrived(finished(812, 9));
    figures.requestFinished(840, false);
    figures.forget();
    assert.equal(figures.serverStatus, undefined);
    assert.equal(figures.roundTripMs, undefined);
  });
});
