import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CancellationTokenSource } from "vscode-languageserver-protocol";
import { waitUnlessCancelled } from "../../src/debounce";

/** What `promise` has resolved to once pending callbacks ran, or "pending". */
async function outcome<T>(promise: Promise<T>): Promise<T | "pending"> {
  let settled: { value: T } | undefined;
  void promise.then((value) => {
    settled = { value };
  });
  // setImmediate runs after the promise callbacks queued so far; the tests mock setTimeout only.
  await new Promise((resolve) => setImmediate(resolve));
  return settled === undefined ? "pending" : settled.value;
}

/** A token that counts its listeners, cancelled by `cancel()`. */
function countingToken() {
  const listeners = new Set<() => void>();
  return {
    isCancellationRequested: false,
    onCancellationRequested(listener: () => void) {
      listeners.add(listener);
      return {
        dispose: () => {
          listeners.delete(listener);
        },
      };
    },
    get listeners() {
      return listeners.size;
    },
    cancel() {
      this.isCancellationRequested = true;
      for (const listener of [...listeners]) {
        listener();
      }
    },
  };
}

describe("debounce wait", () => {
  it("resolves true once the delay has passed, not before", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const wait = waitUnlessCancelled(60, new CancellationTokenSource().token);
    t.mock.timers.tick(59);
    assert.equal(await outcome(wait), "pending");
    t.mock.timers.tick(1);
    assert.equal(await outcome(wait), true);
  });

  it("resolves false as soon as the token is cancelled, long before the delay", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const source = new CancellationTokenSource();
    const wait = waitUnlessCancelled(5000, source.token);
    t.mock.timers.tick(20);
    source.cancel();
    assert.equal(await outcome(wait), false);
  });

  it("does not wait at all for an already cancelled token", async () => {
    const source = new CancellationTokenSource();
    source.cancel();
    assert.equal(await waitUnlessCancelled(5000, source.token), false);
  });

  it("removes its cancellation listener once the delay has passed", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const token = countingToken();
    const wait = waitUnlessCancelled(5, token);
    assert.equal(token.listeners, 1);
    t.mock.timers.tick(5);
    assert.equal(await wait, true);
    assert.equal(token.listeners, 0);
  });

  it("removes its cancellation listener once cancelled", async () => {
    const token = countingToken();
    const wait = waitUnlessCancelled(5000, token);
    token.cancel();
    assert.equal(await wait, false);
    assert.equal(token.listeners, 0);
  });
});
