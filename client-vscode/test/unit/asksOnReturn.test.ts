import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AsksOnReturn } from "../../src/asksOnReturn";

/** A document's editor as VS Code reports it: the document, its version, the cursor. */
const notes = { name: "notes.txt" };
const answeredAt = { line: 1, character: 37 };
const editor = (version: number, cursor: { line: number; character: number } | undefined) => ({
  document: notes,
  version,
  cursor,
});

/** The asks after an answer came at `answeredAt` in version 39 of `notes`, in another editor. */
function answeredElsewhere(): AsksOnReturn<typeof notes> {
  const asks = new AsksOnReturn<typeof notes>();
  asks.answeredElsewhere(notes, 39, answeredAt);
  return asks;
}

describe("asking again when the editor of an answer becomes active again", () => {
  it("asks once the editor is back with its cursor at the answered place, and only once", () => {
    const asks = answeredElsewhere();
    assert.equal(asks.editorActivated(editor(39, answeredAt)), true);
    assert.equal(asks.editorActivated(editor(39, answeredAt)), false);
  });

  it("asks when VS Code puts the cursor back just after telling of the activation", () => {
    // VS Code 1.139 reports the editor at 0:0 first, then its restored cursor.
    const asks = answeredElsewhere();
    assert.equal(asks.editorActivated(editor(39, { line: 0, character: 0 })), false);
    assert.equal(asks.cursorChanged(editor(39, answeredAt)), true);
  });

  it("does not ask when the user moves the cursor onto the place later", () => {
    const asks = answeredElsewhere();
    assert.equal(asks.editorActivated(editor(39, { line: 0, character: 5 })), false);
    assert.equal(asks.cursorChanged(editor(39, { line: 0, character: 6 })), false);
    assert.equal(asks.cursorChanged(editor(39, answeredAt)), false);
    // Coming back to the editor with the cursor there still does.
    assert.equal(asks.editorActivated(editor(39, answeredAt)), true);
  });

  it("does not ask when the document was edited since the answer", () => {
    const asks = answeredElsewhere();
    assert.equal(asks.editorActivated(editor(40, answeredAt)), false);
    assert.equal(asks.cursorChanged(editor(40, answeredAt)), false);
  });

  it("does not ask with a selection or several cursors, nor after the document was closed", () => {
    const asks = answeredElsewhere();
    assert.equal(asks.editorActivated(editor(39, undefined)), false);
    asks.documentClosed(notes);
    assert.equal(asks.editorActivated(editor(39, answeredAt)), false);
  });

  it("asks nothing for an editor whose document had no answer elsewhere", () => {
    const asks = new AsksOnReturn<typeof notes>();
    asks.answeredElsewhere({ name: "other.txt" }, 3, answeredAt);
    assert.equal(asks.editorActivated(editor(39, answeredAt)), false);
  });
});
