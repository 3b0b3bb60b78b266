import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  acceptedText,
  REFRESH_BOUND_MS,
  RefreshingSuggestion,
  SHOW_GRACE_MS,
} from "../../src/refreshingSuggestion";

/** A refreshing suggestion whose timers the test runs, and what its context key heard. */
function refreshingSuggestion() {
  const contextKey: boolean[] = [];
  const timers = new Set<{ ms: number; run: () => void }>();
  const refreshing = new RefreshingSuggestion<string, number>(
    (value) => contextKey.push(value),
    (ms, run) => {
      const timer = { ms, run };
      timers.add(timer);
      return { dispose: () => timers.delete(timer) };
    },
  );
  const timePasses = (ms: number) => {
    for (const timer of [...timers]) {
      if (timer.ms <= ms) {
        timers.delete(timer);
        timer.run();
      }
    }
  };
  return { refreshing, contextKey, timePasses };
}

const shown = { document: "notes.txt", version: 3, position: 24, text: " Paris." };

describe("a suggestion refreshing while the editor hides it to show it grown", () => {
  it("binds the keys from before the hide until Tab takes the text that was shown", () => {
    const { refreshing, contextKey } = refreshingSuggestion();
    refreshing.begin(shown);
    assert.deepEqual(contextKey, [true]);
    assert.deepEqual(refreshing.take(), shown);
    assert.deepEqual(contextKey, [true, false]);
    assert.equal(refreshing.take(), undefined, "a second key gets the key's own command");
  });

  it("unbinds the keys a moment after the grown text went to the editor", () => {
    const { refreshing, contextKey, timePasses } = refreshingSuggestion();
    refreshing.begin(shown);
    refreshing.answered();
    timePasses(SHOW_GRACE_MS - 1);
    assert.equal(refreshing.refreshing, true);
    timePasses(SHOW_GRACE_MS);
    assert.deepEqual(contextKey, [true, false]);
  });

  it("unbinds the keys if no grown text comes", () => {
    const { refreshing, contextKey, timePasses } = refreshingSuggestion();
    refreshing.begin(shown);
    timePasses(REFRESH_BOUND_MS);
    assert.equal(refreshing.take(), undefined);
    assert.deepEqual(contextKey, [true, false]);
  });

  it("keeps the keys bound through the next refresh, with the text shown then", () => {
    const { refreshing, contextKey, timePasses } = refreshingSuggestion();
    refreshing.begin(shown);
    refreshing.answered();
    const grown = { ...shown, text: " Paris. It is" };
    refreshing.begin(grown);
    timePasses(SHOW_GRACE_MS);
    assert.deepEqual(refreshing.take(), grown, "the earlier answer's end does not end this one");
    assert.deepEqual(contextKey, [true, false]);
  });

  it("hears an answer with nothing refreshing as nothing", () => {
    const { refreshing, contextKey, timePasses } = refreshingSuggestion();
    refreshing.answered();
    timePasses(REFRESH_BOUND_MS);
    refreshing.end();
    assert.deepEqual(contextKey, []);
  });
});

describe("what a key accepts of the suggestion that was shown", () => {
  it("Tab: all of it after text", () => {
    assert.equal(acceptedText(" Paris.\nIt is", "all", "The capital is", 4), " Paris.\nIt is");
    assert.equal(acceptedText("    return ids", "all", "x = 1", 4), "    return ids");
  });

  it("Tab: nothing in the indentation when the suggestion starts with a tab's width of it", () => {
    // VS Code indents there instead (its inlineSuggestionHasIndentationLessThanTabSize).
    assert.equal(acceptedText("    return ids", "all", "", 4), undefined);
    assert.equal(acceptedText("\treturn ids", "all", "    ", 4), undefined);
    assert.equal(acceptedText("  return ids", "all", "    ", 8), "  return ids");
    assert.equal(acceptedText("return ids", "all", "    ", 4), "return ids");
  });

  it("Ctrl+Right: the next word as VS Code counts it", () => {
    assert.equal(acceptedText("Paris is", "word", "The capital is ", 4), "Paris");
    assert.equal(acceptedText(" Paris is", "word", "The capital is", 4), " ");
    assert.equal(acceptedText("\n\n* Stay", "word", "tips:", 4), "\n\n");
    assert.equal(acceptedText("3.5 kg", "word", "It weighs ", 4), "3.5");
    assert.equal(acceptedText(", and", "word", "Paris", 4), ", ");
  });
});
