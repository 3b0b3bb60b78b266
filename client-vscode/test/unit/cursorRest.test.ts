import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CursorRest } from "../../src/cursorRest";

describe("cursor rest", () => {
  it("reports the place once the cursor has stayed there", (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const rested: string[] = [];
    const rest = new CursorRest<string>((place) => rested.push(place), 30);
    rest.moved("a:1");
    t.mock.timers.tick(29);
    assert.deepEqual(rested, []);
    t.mock.timers.tick(1);
    assert.deepEqual(rested, ["a:1"]);
  });

  it("reports only the last of quick moves", (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const rested: string[] = [];
    const rest = new CursorRest<string>((place) => rested.push(place), 40);
    rest.moved("a:1");
    t.mock.timers.tick(30);
    rest.moved("a:2");
    t.mock.timers.tick(30);
    rest.moved("a:3");
    t.mock.timers.tick(39);
    assert.deepEqual(rested, [], "each move waits its own rest");
    t.mock.timers.tick(1);
    assert.deepEqual(rested, ["a:3"]);
  });

  it("reports nothing after a move to no place, or once disposed", (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const rested: string[] = [];
    const rest = new CursorRest<string>((place) => rested.push(place), 30);
    rest.moved("a:1");
    rest.moved(undefined);
    const disposed = new CursorRest<string>((place) => rested.push(place), 30);
    disposed.moved("b:1");
    disposed.dispose();
    t.mock.timers.tick(1000);
    assert.deepEqual(rested, []);
  });
});
