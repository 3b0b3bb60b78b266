import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CompletionFigures } from "../../src/completionFigures";
import type { ServerStatus } from "../../src/protocol";
import { readyStatus } from "./statusFixtures";

const ready = readyStatus("smollm2-135m");
const generating: ServerStatus = { ...ready, state: "generating" };

function finished(latencyMs: number, tokens: number): ServerStatus {
  return { ...ready, lastLatencyMs: latencyMs, lastTokensPerSecond: 20.5, lastTokens: tokens };
}

/** CompletionFigures on a clock the test moves, with requests timed on that clock. */
class Timeline {
  private nowMs = 0;
  readonly figures = new CompletionFigures(() => this.nowMs);

  at(ms: number, status: ServerStatus): this {
    this.nowMs = ms;
    this.figures.serverStatusArrived(status);
    return this;
  }

  request(fromMs: number, toMs: number, cancelled = false): this {
    this.nowMs = toMs;
    this.figures.requestFinished(toMs - fromMs, cancelled);
    return this;
  }
}

/** A request from 0 to 840 ms whose generation finished just before the answer. */
function answeredWhole(): Timeline {
  return new Timeline().at(30, generating).at(830, finished(812, 9)).request(0, 840);
}

describe("last completion figures", () => {
  it("pairs the round trip with the figures of the generation its request began", () => {
    const { figures } = answeredWhole();
    assert.equal(figures.serverStatus?.lastLatencyMs, 812);
    assert.equal(figures.roundTripMs, 840);
  });

  it("shows an early answer's round trip once its generation's figures arrive", () => {
    const timeline = answeredWhole().at(2030, generating).request(2000, 2600);
    // The figures on show are still those of the generation before.
    assert.equal(timeline.figures.roundTripMs, undefined);
    timeline.at(5000, finished(2950, 50));
    assert.equal(timeline.figures.roundTripMs, 600);
  });

  it("keeps the pairing through answers from a running suggestion", () => {
    // Typing through or asking again: answered in a few ms, and no generation began.
    const timeline = answeredWhole().request(2000, 2004);
    assert.equal(timeline.figures.roundTripMs, 840);
  });

  it("drops the round trip once the server reports a later generation", () => {
    const timeline = answeredWhole().at(3000, generating).at(6000, finished(2950, 50));
    assert.equal(timeline.figures.serverStatus?.lastLatencyMs, 2950);
    assert.equal(timeline.figures.roundTripMs, undefined);
  });

  it("keeps the round trip through state changes that carry the same figures", () => {
    const timeline = answeredWhole()
      .at(900, { ...finished(812, 9), state: "generating" })
      .at(950, finished(812, 9));
    assert.equal(timeline.figures.roundTripMs, 840);
  });

  it("ignores the round trip of a cancelled request", () => {
    const timeline = answeredWhole()
      .at(3030, { ...finished(812, 9), state: "generating" })
      .request(3000, 3120, true)
      .at(3130, finished(812, 9)); // stopped: no new figures
    assert.equal(timeline.figures.roundTripMs, 840);
  });

  it("forgets everything when the server process goes away", () => {
    const { figures } = answeredWhole();
    figures.forget();
    assert.equal(figures.serverStatus, undefined);
    assert.equal(figures.roundTripMs, undefined);
  });
});
