import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RequestCancellation } from "../../src/cancellation";
import { modelLoaded } from "../../src/modelLoad";
import type { ServerStatus } from "../../src/protocol";
import { readyStatus, statusSource } from "./statusFixtures";

const ready = readyStatus("smollm2-135m");
const loading: ServerStatus = { ...ready, state: "loading", percentage: 40 };

describe("a suggestion's wait for the model", () => {
  it("ends at once when no model is loading", async () => {
    const { source } = statusSource(ready);
    assert.equal(await modelLoaded(source, new RequestCancellation().token), true);
  });

  it("lasts through the load's progress and ends when the model is ready", async () => {
    const { source, change, listeners } = statusSource(loading);
    let ended = false;
    const wait = modelLoaded(source, new RequestCancellation().token).then((loaded) => {
      ended = true;
      return loaded;
    });
    change({ ...loading, percentage: 80 });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(ended, false);
    change(ready);
    assert.equal(await wait, true);
    assert.equal(listeners.size, 0);
  });

  it("ends when the server goes away, which a loading status will not follow", async () => {
    const { source, change } = statusSource(loading);
    const wait = modelLoaded(source, new RequestCancellation().token);
    change(undefined); // stopped, or restarting after a crash
    assert.equal(await wait, true);
  });

  it("ends with false when the request is cancelled first", async () => {
    const { source, listeners } = statusSource(loading);
    const cancellation = new RequestCancellation();
    const wait = modelLoaded(source, cancellation.token);
    cancellation.cancel();
    assert.equal(await wait, false);
    assert.equal(listeners.size, 0);
  });
});
