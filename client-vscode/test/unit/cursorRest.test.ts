import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CursorRest } from "../../src/cursorRest";

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe("cursor rest", () => {
  it("reports the place once the cursor has stayed there", async () => {
    const rested: string[] = [];
    const rest = new CursorRest<string>((place) => rested.push(place), 30);
    rest.moved("a:1");
    assert.deepEqual(rested, []);
    await delay(80);
    assert.deepEqual(rested, ["a:1"]);
  });

  it("reports only the last of quick moves", async () => {
    const rested: string[] = [];
    const rest = new CursorRest<string>((place) => rested.push(place), 40);
    rest.moved("a:1");
    await delay(10);
    rest.moved("a:2");
    await delay(10);
    rest.moved("a:3");
    await delay(100);
    assert.deepEqual(rested, ["a:3"]);
  });

  it("reports nothing after a move to no place, or once disposed", async () => {
    const rested: string[] = [];
    const rest = new CursorRest<string>((place) => rested.push(place), 30);
    rest.moved("a:1");
    rest.moved(undefined);
    const disposed = new CursorRest<string>((place) => rested.push(place), 30);
    disposed.moved("b:1");
    disposed.dispose();
    await delay(80);
    assert.deepEqual(rested, []);
  });
});
