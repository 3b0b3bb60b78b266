import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { subscribeInBackground } from "../../src/backgroundSubscription";
import { settled } from "./fakeSession";

/** The Python extension's environment events, once its API comes (when the test says). */
function lateApi() {
  const listening = { now: false, subscribed: false };
  const ends: { arrive(): void; fail(error: Error): void } = {
    arrive: () => undefined,
    fail: () => undefined,
  };
  const api = new Promise<{ dispose(): void }>((resolve, reject) => {
    ends.arrive = () => {
      listening.now = true;
      listening.subscribed = true;
      resolve({
        dispose: () => {
          listening.now = false;
        },
      });
    };
    ends.fail = reject;
  });
  return {
    subscribe: () => api,
    listening,
    arrive: () => {
      ends.arrive();
    },
    fail: (error: Error) => {
      ends.fail(error);
    },
  };
}

describe("following the Python extension's environment", () => {
  it("does not wait for its API, and listens once it comes", async () => {
    const api = lateApi();
    const subscription = subscribeInBackground(api.subscribe, () => undefined);
    assert.equal(api.listening.now, false, "returned before the API came");
    api.arrive();
    await settled();
    assert.equal(api.listening.now, true);
    subscription.dispose();
    assert.equal(api.listening.now, false);
  });

  it("stops listening at once when the API comes after the window closed", async () => {
    const api = lateApi();
    subscribeInBackground(api.subscribe, () => undefined).dispose();
    api.arrive();
    await settled();
    assert.equal(api.listening.subscribed, true);
    assert.equal(api.listening.now, false, "no listener outlives the extension");
  });

  it("reports an API that fails", async () => {
    const api = lateApi();
    const failures: unknown[] = [];
    subscribeInBackground(api.subscribe, (error) => failures.push(error));
    api.fail(new Error("the Python extension failed to activate"));
    await settled();
    assert.match(String(failures[0]), /failed to activate/);
  });
});
