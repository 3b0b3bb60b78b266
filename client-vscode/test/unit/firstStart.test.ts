import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { needsServerNow } from "../../src/firstStart";

describe("when the first server starts", () => {
  it("starts at once in a window with a folder, or with a file or an untitled document", () => {
    assert.equal(needsServerNow(1, []), true);
    assert.equal(needsServerNow(0, ["output", "file"]), true);
    assert.equal(needsServerNow(0, ["untitled"]), true);
  });

  it("waits in an empty window: no folder, only documents it does not complete in", () => {
    assert.equal(needsServerNow(0, []), false);
    assert.equal(needsServerNow(0, ["output", "vscode-userdata", "git"]), false);
  });
});
