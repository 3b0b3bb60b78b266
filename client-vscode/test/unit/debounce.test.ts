import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CancellationTokenSource } from "vscode-languageserver-protocol";
import { waitUnlessCancelled } from "../../src/debounce";

describe("debounce wait", () => {
  it("resolves true once the delay has passed", async () => {
    const source = new CancellationTokenSource();
    const started = performance.now();
    assert.equal(await waitUnlessCancelled(60, source.token), true);
    assert.ok(performance.now() - started >= 55);
  });

  it("resolves false as soon as the token is cancelled, long before the delay", async () => {
    const source = new CancellationTokenSource();
    const started = performance.now();
    setTimeout(() => {
      source.cancel();
    }, 20);
    assert.equal(await waitUnlessCancelled(5000, source.token), false);
    assert.ok(performance.now() - started < 1000);
  });

  it("does not wait at all for an already cancelled token", async () => {
    const source = new CancellationTokenSource();
    source.cancel();
    assert.equal(await waitUnlessCancelled(5000, source.token), false);
  });

  it("removes its cancellation listener in both outcomes", async () => {
    let listeners = 0;
    const token = {
      isCancellationRequested: false,
      onCancellationRequested: () => {
        listeners += 1;
        return {
          dispose: () => {
            listeners -= 1;
          },
        };
      },
    };
    assert.equal(await waitUnlessCancelled(5, token), true);
    assert.equal(listeners, 0);
  });
});
