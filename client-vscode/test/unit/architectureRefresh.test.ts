import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { reportOnceLoaded } from "../../src/architectureRefresh";
import type { ServerStatus } from "../../src/protocol";
import { phi3MiniReport } from "./architectureFixtures";
import { readyStatus, statusSource } from "./statusFixtures";

const MODEL = phi3MiniReport.model;

const beforeTheWeights = { ...phi3MiniReport, weightsPending: true };
const loaded = { ...phi3MiniReport, weightsLoaded: true, weightsPending: false };
const downloading: ServerStatus = { ...readyStatus(MODEL), state: "loading", percentage: 40 };

describe("an architecture view shown before the weights came", () => {
  it("gets the loaded model's report once the model has loaded", async () => {
    const { source, change } = statusSource(downloading);
    let asked = 0;
    const refreshed = reportOnceLoaded(beforeTheWeights, source, () => {
      asked += 1;
      return Promise.resolve(loaded);
    });
    change({ ...downloading, percentage: 90 });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(asked, 0, "asked again while the weights still came");
    change(readyStatus(MODEL));
    assert.deepEqual(await refreshed, loaded);
    assert.equal(asked, 1);
  });

  it("is left as it is when another model was loaded, or the load failed", async () => {
    for (const ended of [
      readyStatus("smollm2-135m"),
      { ...downloading, state: "error" as const, message: "No space left on device" },
    ]) {
      const { source, change } = statusSource(downloading);
      const refreshed = reportOnceLoaded(beforeTheWeights, source, () => Promise.resolve(loaded));
      change(ended);
      assert.equal(await refreshed, undefined);
    }
  });

  it("is left as it is when the server cannot answer", async () => {
    const { source } = statusSource(readyStatus(MODEL));
    const failing = () => Promise.reject(new Error("the server stopped"));
    assert.equal(await reportOnceLoaded(beforeTheWeights, source, failing), undefined);
  });

  it("is not asked again for a model that had loaded", async () => {
    const { source } = statusSource(readyStatus(MODEL));
    let asked = 0;
    const ask = () => {
      asked += 1;
      return Promise.resolve(loaded);
    };
    assert.equal(await reportOnceLoaded(loaded, source, ask), undefined);
    assert.equal(asked, 0);
  });
});
