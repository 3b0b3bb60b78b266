import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InlineCompletionRequest } from "vscode-languageserver-protocol";
import { dismissInDocument } from "../../src/escapeDismissal";
import { GeneratingDocument } from "../../src/generatingDocument";
import { PendingSuggestions } from "../../src/pendingSuggestions";

const notes = "file:///work/notes.txt";
const words = "file:///work/words.txt";

/**
 * The extension's pending suggestions and generating document, and what Escape turned down: a
 * suggestion is pending in each document of `pendingIn`, and the server generates for
 * `generatingFor`.
 */
function editors(pendingIn: readonly string[], generatingFor: string | undefined) {
  const turnedDown: string[] = [];
  const stopped: string[] = [];
  const pending = new PendingSuggestions(() => undefined);
  for (const uri of pendingIn) {
    pending.add(uri, () => turnedDown.push(uri));
  }
  const generating = new GeneratingDocument(() => undefined);
  if (generatingFor !== undefined) {
    generating.requestSent(InlineCompletionRequest.method, {
      textDocument: { uri: generatingFor },
      position: { line: 0, character: 0 },
    });
    generating.statusChanged("generating");
  }
  const escapeIn = (uri: string) => {
    dismissInDocument(uri, {
      pending,
      generating,
      stopGeneration: (stoppedIn) => stopped.push(stoppedIn),
    });
  };
  return { pending, turnedDown, stopped, escapeIn };
}

describe("Escape in a document's editor", () => {
  it("turns down a suggestion growing there and stops its generation", () => {
    const { pending, turnedDown, stopped, escapeIn } = editors([notes], notes);
    escapeIn(notes);
    assert.deepEqual(turnedDown, [notes]);
    assert.deepEqual(stopped, [notes]);
    assert.deepEqual(pending.documents, []);
  });

  it("turns down the suggestion coming there, and not another file's the server generates", () => {
    // notes.txt's request waits out its debounce while the server still generates words.txt's,
    // asked before the user went to notes.txt.
    const { pending, turnedDown, stopped, escapeIn } = editors([notes, words], words);
    escapeIn(notes);
    assert.deepEqual(turnedDown, [notes]);
    assert.deepEqual(stopped, [], "the server goes on generating for words.txt");
    assert.deepEqual(pending.documents, [words]);
  });

  it("stops the generation of the ghost text there, and not another file's coming suggestion", () => {
    const { pending, turnedDown, stopped, escapeIn } = editors([words], notes);
    escapeIn(notes);
    assert.deepEqual(stopped, [notes]);
    assert.deepEqual(turnedDown, []);
    assert.deepEqual(pending.documents, [words]);
  });
});
