import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { reportOnceLoaded } from "../../src/architectureRefresh";
import type { ServerStatusSource } from "../../src/modelLoad";
import type { ArchitectureReport, ServerStatus } from "../../src/protocol";
import { readyStatus } from "./statusFixtures";

const MODEL = "microsoft/Phi-3-mini-4k-instruct";

function architecture(weights: { loaded: boolean; pending: boolean }): ArchitectureReport {
  return {
    model: MODEL,
    className: "Phi3ForCausalLM",
    weightsLoaded: weights.loaded,
    weightsPending: weights.pending,
    repr: "Phi3ForCausalLM()",
    config: {
      modelType: "phi3",
      layers: 32,
      hiddenSize: 3072,
      intermediateSize: 8192,
      attentionHeads: 32,
      keyValueHeads: 32,
      headDim: 96,
      vocabSize: 32064,
      contextLength: 4096,
      dtype: "float32",
      tieWordEmbeddings: false,
    },
    parameters: { total: 3821079552, byModule: [] },
  };
}

const beforeTheWeights = architecture({ loaded: false, pending: true });
const loaded = architecture({ loaded: true, pending: false });
const downloading: ServerStatus = { ...readyStatus(MODEL), state: "loading", percentage: 40 };

/** The status bar's copy of the server's status, which the test changes. */
function statusSource(status: ServerStatus) {
  const listeners = new Set<() => void>();
  const source: { serverStatus: ServerStatus | undefined } & ServerStatusSource = {
    serverStatus: status,
    onServerStatusChanged: (listener) => {
      listeners.add(listener);
      return { dispose: () => listeners.delete(listener) };
    },
  };
  const change = (next: ServerStatus) => {
    source.serverStatus = next;
    for (const listener of [...listeners]) {
      listener();
    }
  };
  return { source, change };
}

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
