import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InlineCompletionRequest } from "vscode-languageserver-protocol";
import { GeneratingDocument } from "../../src/generatingDocument";

const notes = "file:///work/notes.txt";
const words = "file:///work/words.txt";
const cell = "vscode-notebook-cell:/work/lab.ipynb#W0sZmlsZQ%3D%3D";

/** An inline completion request's params at the start of `uri`. */
const completionAt = (uri: string) => ({
  textDocument: { uri },
  position: { line: 0, character: 0 },
  context: { triggerKind: 1 },
});

/** A tracker and the values it gave the context key, in order. */
function tracked() {
  const keys: (readonly string[])[] = [];
  const generating = new GeneratingDocument((uris) => keys.push(uris));
  return { generating, keys };
}

describe("the document the server generates for", () => {
  it("is the last inline completion request's while the status says generating", () => {
    const { generating, keys } = tracked();
    generating.requestSent(InlineCompletionRequest.type, completionAt(notes));
    assert.equal(generating.uri, undefined, "nothing generates before the status says so");
    generating.statusChanged("generating");
    assert.equal(generating.uri, notes);
    // Another document's request supersedes the generation: the server generates there now.
    generating.requestSent(InlineCompletionRequest.method, completionAt(cell));
    assert.equal(generating.uri, cell);
    generating.statusChanged("ready");
    assert.equal(generating.uri, undefined);
    assert.deepEqual(keys, [[notes], [cell], []]);
  });

  it("is not moved by requests that generate nothing: a hover, reading the prompt", () => {
    const { generating } = tracked();
    generating.requestSent(InlineCompletionRequest.type, completionAt(notes));
    generating.statusChanged("generating");
    generating.requestSent("textDocument/hover", completionAt(words));
    generating.requestSent("phi3/readAtCursor", completionAt(words));
    generating.requestSent("workspace/executeCommand", { command: "phi3.status" });
    assert.equal(generating.uri, notes);
  });

  it("is none once the server has gone or loads another model", () => {
    for (const state of [undefined, "loading", "error"] as const) {
      const { generating, keys } = tracked();
      generating.requestSent(InlineCompletionRequest.type, completionAt(words));
      generating.statusChanged("generating");
      generating.statusChanged(state);
      assert.equal(generating.uri, undefined, String(state));
      assert.deepEqual(keys, [[words], []], String(state));
    }
  });

  it("tells the context key only of changes", () => {
    const { generating, keys } = tracked();
    generating.statusChanged("ready");
    generating.requestSent(InlineCompletionRequest.type, completionAt(words));
    generating.statusChanged("generating");
    generating.requestSent(InlineCompletionRequest.type, completionAt(words)); // a growth's ask
    generating.statusChanged("generating");
    assert.deepEqual(keys, [[words]]);
  });
});
