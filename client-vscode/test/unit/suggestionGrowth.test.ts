import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type * as vscode from "vscode";
import { CancellationTokenSource } from "vscode-languageserver-protocol";
import { inlineCompletionMiddleware } from "../../src/inlineCompletionMiddleware";
import { PendingSuggestions } from "../../src/pendingSuggestions";
import type { ServerStatus } from "../../src/protocol";
import { GROW_EVERY_MS, SuggestionGrowth } from "../../src/suggestionGrowth";
import { readyStatus, statusSource } from "./statusFixtures";

const ready = readyStatus("smollm2-135m");
const generating: ServerStatus = { ...ready, state: "generating" };
const loading: ServerStatus = { ...ready, state: "loading" };

// Plain objects stand in for VS Code's: the module compares documents, versions and places.
const at = (line: number, character: number) => ({ line, character }) as unknown as vscode.Position;
const cursor = at(3, 16);

/**
 * A growth with the editor around it: a document the test edits, a cursor it moves, editors it
 * switches, the status it changes, the ticks it gives, and the asks it records.
 */
function editor(status: ServerStatus = generating) {
  const documentState = { uri: "file:///tmp/tokens.py", version: 1 };
  const document = documentState as unknown as vscode.TextDocument;
  const other = { uri: "file:///tmp/other.py", version: 1 } as unknown as vscode.TextDocument;
  const server = statusSource(status);
  const settings = { inlineCompletions: true };
  const placeWatchers = new Set<() => void>();
  const editorWatchers = new Set<() => void>();
  const ticks = new Set<{ ms: number; tick: () => void }>();
  const asked: string[] = [];
  const pending = new PendingSuggestions(() => undefined);
  /** What VS Code does when asked: here, nothing; see `answering`. */
  let onAsk: (document: vscode.TextDocument, position: vscode.Position) => void = () => undefined;
  const growth = new SuggestionGrowth({
    status: server.source,
    inlineCompletions: () => settings.inlineCompletions,
    watchPlace: (_document, _position, listener) => {
      placeWatchers.add(listener);
      return { dispose: () => placeWatchers.delete(listener) };
    },
    onActiveEditorChanged: (listener) => {
      editorWatchers.add(listener);
      return { dispose: () => editorWatchers.delete(listener) };
    },
    askAgain: (asking, position) => {
      asked.push(
        `${asking === document ? "tokens.py" : "other.py"}:${position.line}:${position.character}`,
      );
      onAsk(asking, position);
    },
    suggestionPending: (dismiss) => pending.add(dismiss),
    every: (ms, tick) => {
      const timer = { ms, tick };
      ticks.add(timer);
      return { dispose: () => ticks.delete(timer) };
    },
  });
  const tell = (watchers: Set<() => void>) => {
    for (const watcher of [...watchers]) {
      watcher();
    }
  };
  return {
    growth,
    document,
    other,
    asked,
    pending,
    ticks,
    settings,
    status: server.change,
    answeredAt: (position: vscode.Position = cursor) => {
      growth.answered(document, position);
    },
    /** The time between two asks passes. */
    tick: () => {
      for (const { tick } of [...ticks]) {
        tick();
      }
    },
    edit: () => {
      documentState.version += 1;
      tell(placeWatchers);
    },
    moveCursor: () => {
      tell(placeWatchers);
    },
    switchEditor: () => {
      tell(editorWatchers);
    },
    /** What the extension's Escape binding does while a suggestion is pending. */
    escape: () => {
      pending.dismissAll();
    },
    answering: (answer: typeof onAsk) => {
      onAsk = answer;
    },
  };
}

describe("a suggestion answered while the server generates it", () => {
  it("is asked for again at its place at every tick while the server generates", () => {
    const place = editor();
    place.answeredAt();
    assert.deepEqual(place.asked, [], "the answer itself is on screen already");
    place.tick();
    place.tick();
    place.tick();
    assert.deepEqual(place.asked, ["tokens.py:3:16", "tokens.py:3:16", "tokens.py:3:16"]);
    assert.deepEqual(
      [...place.ticks].map(({ ms }) => ms),
      [GROW_EVERY_MS],
    );
    assert.equal(place.pending.pending, true, "Escape must reach it while it grows");
  });

  it("is asked for once more when the server is ready, for the whole text, then no more", () => {
    const place = editor();
    place.answeredAt();
    place.tick();
    place.status(ready);
    assert.deepEqual(place.asked, ["tokens.py:3:16", "tokens.py:3:16"]);
    place.tick();
    place.status(generating);
    place.status(ready);
    assert.equal(place.asked.length, 2);
    assert.equal(place.pending.pending, false);
    assert.equal(place.growth.growing, false);
  });

  it("stays as it is when the server is already done", () => {
    const place = editor(ready);
    place.answeredAt();
    place.tick();
    place.status(generating);
    place.tick();
    place.status(ready);
    assert.deepEqual(place.asked, []);
    assert.equal(place.pending.pending, false);
  });

  it("is not asked for when the server goes away or loads another model", () => {
    for (const next of [undefined, loading]) {
      const place = editor();
      place.answeredAt();
      place.status(next);
      place.tick();
      assert.deepEqual(place.asked, [], String(next?.state));
      assert.equal(place.growth.growing, false);
    }
  });
});

describe("a growing suggestion stops growing", () => {
  const stoppers: [string, (place: ReturnType<typeof editor>) => void][] = [
    [
      "when the document is edited (typing, or accepting part of it)",
      (place) => {
        place.edit();
      },
    ],
    [
      "when the cursor leaves its place",
      (place) => {
        place.moveCursor();
      },
    ],
    [
      "when another editor becomes active",
      (place) => {
        place.switchEditor();
      },
    ],
    [
      "when the user turns it down with Escape",
      (place) => {
        place.escape();
      },
    ],
    [
      "when the client stops",
      (place) => {
        place.growth.dispose();
      },
    ],
  ];
  for (const [when, stop] of stoppers) {
    it(when, () => {
      const place = editor();
      place.answeredAt();
      place.tick();
      stop(place);
      place.tick();
      place.status(ready);
      assert.deepEqual(
        place.asked,
        ["tokens.py:3:16"],
        "no ask after it stopped, not even the last",
      );
      assert.equal(place.pending.pending, false, "Escape is VS Code's again");
      assert.equal(place.growth.growing, false);
    });
  }

  it("when inline completions are turned off", () => {
    const place = editor();
    place.answeredAt();
    place.tick();
    place.settings.inlineCompletions = false;
    place.tick();
    place.settings.inlineCompletions = true;
    place.tick();
    place.status(ready);
    assert.deepEqual(place.asked, ["tokens.py:3:16"]);
    assert.equal(place.pending.pending, false);
  });

  it("when its last ask would come with inline completions turned off", () => {
    const place = editor();
    place.answeredAt();
    place.settings.inlineCompletions = false;
    place.status(ready);
    assert.deepEqual(place.asked, []);
  });

  it("when an answer at another place comes: that one grows instead", () => {
    const place = editor();
    place.answeredAt();
    place.tick();
    place.answeredAt(at(4, 2));
    place.tick();
    place.tick();
    place.status(ready);
    assert.deepEqual(place.asked, [
      "tokens.py:3:16",
      "tokens.py:4:2",
      "tokens.py:4:2",
      "tokens.py:4:2",
    ]);
    assert.equal(place.ticks.size, 0);
  });

  it("and an answer after the client stopped starts nothing", () => {
    const place = editor();
    place.growth.dispose();
    place.answeredAt();
    place.tick();
    assert.deepEqual(place.asked, []);
    assert.equal(place.pending.pending, false);
  });
});

describe("the asks of a growing suggestion, answered through the middleware", () => {
  type Result = vscode.InlineCompletionList | null;
  const invoked = { triggerKind: 0 } as unknown as vscode.InlineCompletionContext;
  const grown = { items: [{ insertText: "_ids = tokenizer(" }] } as unknown as Result;
  const nothing = { items: [] } as unknown as Result;

  /** The middleware of a client, wired to the growth as clientMiddleware.ts does. */
  function throughMiddleware() {
    const place = editor();
    let serverRequests = 0;
    const middleware = inlineCompletionMiddleware({
      currentSettings: () => ({ inlineCompletions: true, debounceMs: 60_000 }),
      cannotSuggest: () => false,
      untilModelLoaded: () => Promise.resolve(true),
      requestStarted: () => undefined,
      requestFinished: () => undefined,
      watchPlace: () => ({ dispose: () => undefined }),
      askAgain: () => undefined,
      suggestionPending: (dismiss) => place.pending.add(dismiss),
      suggestionShown: (document, position) => {
        place.growth.answered(document, position);
      },
    });
    const provide = middleware.provideInlineCompletionItems;
    assert.ok(provide);
    const answers: Promise<unknown>[] = [];
    // VS Code asked again: a request the user's (`Invoke`), which the server answers at once.
    const ask = (document: vscode.TextDocument, position: vscode.Position, answer: Result) => {
      const token = new CancellationTokenSource().token as unknown as vscode.CancellationToken;
      answers.push(
        Promise.resolve(
          provide(document, position, invoked, token, () => {
            serverRequests += 1;
            return Promise.resolve(answer);
          }),
        ),
      );
    };
    const settled = () => Promise.all(answers.splice(0));
    return { place, ask, settled, requests: () => serverRequests };
  }

  it("start no more growing: one request per tick, however many answers came", async () => {
    const { place, ask, settled, requests } = throughMiddleware();
    place.answering((document, position) => {
      ask(document, position, grown);
    });
    ask(place.document, cursor, grown); // the first answer, cut by the time budget
    await settled();
    for (let tick = 1; tick <= 4; tick++) {
      place.tick();
      await settled();
      assert.equal(requests(), 1 + tick, `after tick ${tick}`);
      assert.equal(place.ticks.size, 1);
    }
    // The last ask's answer comes while another generation has begun: it starts nothing.
    place.answering((document, position) => {
      place.status(generating);
      ask(document, position, grown);
    });
    place.status(ready);
    await settled();
    assert.equal(requests(), 6);
    assert.equal(place.growth.growing, false);
    place.tick();
    assert.equal(requests(), 6);
  });

  it("start nothing with an empty answer", async () => {
    const { place, ask, settled } = throughMiddleware();
    ask(place.document, cursor, nothing);
    await settled();
    assert.equal(place.growth.growing, false);
    place.tick();
    assert.deepEqual(place.asked, []);
  });
});
