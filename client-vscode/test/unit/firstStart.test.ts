import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isCompletedScheme, needsServerNow } from "../../src/firstStart";

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

  it("completes in the code cells of a notebook, each cell a document of its own", () => {
    assert.equal(isCompletedScheme("vscode-notebook-cell"), true);
    assert.equal(needsServerNow(0, ["vscode-notebook-cell"]), true);
  });

  it("leaves read-only views of other documents alone", () => {
    for (const scheme of ["git", "output", "vscode-userdata", "vscode-notebook-cell-output"]) {
      assert.equal(isCompletedScheme(scheme), false, scheme);
    }
  });
});
