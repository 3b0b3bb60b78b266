import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PendingSuggestions } from "../../src/pendingSuggestions";

const notes = "file:///work/notes.txt";
const words = "file:///work/words.txt";
const cell = "vscode-notebook-cell:/work/lab.ipynb#W0sZmlsZQ%3D%3D";

/** Pending suggestions and the values they gave the context key, in order. */
function tracked() {
  const keys: (readonly string[])[] = [];
  const pending = new PendingSuggestions((uris) => keys.push(uris));
  return { pending, keys };
}

describe("pending suggestions", () => {
  it("name each document from its first pending suggestion until its last one ends", () => {
    const { pending, keys } = tracked();
    const first = pending.add(notes, () => undefined);
    const second = pending.add(notes, () => undefined);
    const inCell = pending.add(cell, () => undefined);
    first.dispose();
    first.dispose(); // ending twice changes nothing
    assert.deepEqual(pending.documents, [notes, cell]);
    second.dispose();
    assert.deepEqual(pending.documents, [cell]);
    inCell.dispose();
    assert.deepEqual(pending.documents, []);
    assert.deepEqual(keys, [[notes], [notes, cell], [cell], []]);
  });

  it("turn down each pending suggestion of the document once, and none that has ended", () => {
    const { pending, keys } = tracked();
    const dismissed: string[] = [];
    pending.add(notes, () => dismissed.push("a")).dispose();
    const b = pending.add(notes, () => dismissed.push("b"));
    pending.add(notes, () => dismissed.push("c"));
    pending.dismiss(notes);
    pending.dismiss(notes);
    b.dispose();
    assert.deepEqual(dismissed, ["b", "c"]);
    assert.deepEqual(pending.documents, []);
    assert.deepEqual(keys, [[notes], [], [notes], []]);
  });

  it("leave another document's suggestions pending when one document's are turned down", () => {
    const { pending, keys } = tracked();
    const dismissed: string[] = [];
    pending.add(notes, () => dismissed.push("notes"));
    const inWords = pending.add(words, () => dismissed.push("words"));
    pending.dismiss(notes);
    pending.dismiss(cell); // nothing pending there
    assert.deepEqual(dismissed, ["notes"]);
    assert.deepEqual(pending.documents, [words]);
    inWords.dispose();
    assert.deepEqual(keys, [[notes], [notes, words], [words], []]);
  });

  it("keep a suggestion that began after its document's were turned down", () => {
    const { pending } = tracked();
    const dismissed: string[] = [];
    const before = pending.add(notes, () => dismissed.push("before"));
    pending.dismiss(notes);
    pending.add(notes, () => dismissed.push("after"));
    before.dispose(); // the turned-down request ends afterwards
    assert.deepEqual(pending.documents, [notes]);
    pending.dismiss(notes);
    assert.deepEqual(dismissed, ["before", "after"]);
  });
});
