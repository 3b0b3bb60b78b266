import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PendingSuggestions } from "../../src/pendingSuggestions";

describe("pending suggestions", () => {
  it("reports pending from the first suggestion until the last one ends", () => {
    const changes: boolean[] = [];
    const pending = new PendingSuggestions((isPending) => changes.push(isPending));
    const first = pending.add(() => undefined);
    const second = pending.add(() => undefined);
    first.dispose();
    first.dispose(); // ending twice changes nothing
    assert.equal(pending.pending, true);
    second.dispose();
    assert.equal(pending.pending, false);
    assert.deepEqual(changes, [true, false]);
  });

  it("turns down each pending suggestion once, and none that has ended", () => {
    const changes: boolean[] = [];
    const pending = new PendingSuggestions((isPending) => changes.push(isPending));
    const dismissed: string[] = [];
    pending.add(() => dismissed.push("a")).dispose();
    const b = pending.add(() => dismissed.push("b"));
    pending.add(() => dismissed.push("c"));
    pending.dismissAll();
    pending.dismissAll();
    b.dispose();
    assert.deepEqual(dismissed, ["b", "c"]);
    assert.equal(pending.pending, false);
    assert.deepEqual(changes, [true, false, true, false]);
  });
});
