import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type * as vscode from "vscode";
import { CancellationTokenSource } from "vscode-languageserver-protocol";
import { answerItems } from "../../src/answerItems";
import { inlineCompletionMiddleware } from "../../src/inlineCompletionMiddleware";
import { PendingSuggestions } from "../../src/pendingSuggestions";
import { RefreshingSuggestion, SHOW_GRACE_MS } from "../../src/refreshingSuggestion";
import type { ServerStatus } from "../../src/protocol";
import { GROW_EVERY_MS, SuggestionGrowth } from "../../src/suggestionGrowth";
import { quietHooks } from "./middlewareFixtures";
import { readyStatus, statusSource } from "./statusFixtures";

/** The URI of the document the suggestions are asked in. */
const tokens = "file:///tmp/tokens.py";

const ready = readyStatus("smollm2-135m");
const answerOf = (text: string) =>
  ({ items: [{ insertText: text }] }) as unknown as vscode.InlineCompletionList;
const generating: ServerStatus = { ...ready, state: "generating" };
const loading: ServerStatus = { ...ready, state: "loading" };

// Plain objects stand in for VS Code's: the module compares documents, versions and places.
const at = (line: number, character: number) => ({ line, character }) as unknown as vscode.Position;
const cursor = at(3, 16);
/** An item of VS Code's suggest widget for `is`, typed before the cursor: it replaces it. */
const item = (text: string) =>
  ({ range: { start: at(3, 14), end: cursor }, text }) as unknown as vscode.SelectedCompletionInfo;

/** Lets the promises the growth waits on settle. */
const settled = () => new Promise((resolve) => setImmediate(resolve));

/**
 * A growth with the editor and the server around it: a document the test edits, a cursor it
 * moves, editors it switches, the status and the server's text it changes, the ticks it gives,
 * and what the editor was made to show.
 */
function editor(status: ServerStatus = generating) {
  const documentState = { uri: tokens, version: 1 };
  const document = documentState as unknown as vscode.TextDocument;
  const server = {
    ...statusSource(status),
    text: "_",
    asked: 0,
    /** The suggest widget's item each ask carried, "-" for none. */
    askedOver: [] as string[],
  };
  /** VS Code's suggest widget: the item selected in it while it is open. */
  const widget: { selected: vscode.SelectedCompletionInfo | undefined } = { selected: undefined };
  const settings = { inlineCompletions: true };
  /** A second cursor in the editor: VS Code then shows no suggestion anew (editorAsks.ts). */
  const cursors = { second: false };
  const placeWatchers = new Set<() => void>();
  const editorWatchers = new Set<() => void>();
  const ticks = new Set<{ ms: number; tick: () => void }>();
  /** Each time the editor was made to show the suggestion anew: where, and the text it showed. */
  const shownAgain: string[] = [];
  const pending = new PendingSuggestions(() => undefined);
  /** The refreshing suggestion's ends to come: their delays, run by `refreshTimePasses`. */
  const refreshTimers = new Set<{ ms: number; run: () => void }>();
  const refreshing = new RefreshingSuggestion<vscode.TextDocument, vscode.Position>(
    () => undefined,
    (ms, run) => {
      const timer = { ms, run };
      refreshTimers.add(timer);
      return { dispose: () => refreshTimers.delete(timer) };
    },
  );
  /** What the editor does once made to show it anew: here, nothing; see `showing`. */
  let onShow: (position: vscode.Position) => void = () => undefined;
  /** How the server's answers come: at once unless the test holds them. */
  let answer = (text: string) => Promise.resolve(text);
  /** How the editor hides the suggestion before it asks again: at once unless the test holds it. */
  let hide = (then: () => void) => {
    then();
    return Promise.resolve();
  };
  const growth = new SuggestionGrowth({
    status: server.source,
    inlineCompletions: () => settings.inlineCompletions,
    serverAnswer: async (_document, _position, selectedItem) => {
      server.asked += 1;
      server.askedOver.push(selectedItem?.text ?? "-");
      return answerOf(await answer(server.text));
    },
    showAgain: async (_document, position, stillWanted) => {
      if (cursors.second) {
        return false; // neither hidden nor asked for
      }
      // The editor hides the suggestion, then asks again if it is still wanted.
      let asked = false;
      await hide(() => {
        asked = stillWanted();
        if (asked) {
          onShow(position);
        }
      });
      return asked;
    },
    watchPlace: (_document, _position, listener) => {
      placeWatchers.add(listener);
      return { dispose: () => placeWatchers.delete(listener) };
    },
    onActiveEditorChanged: (listener) => {
      editorWatchers.add(listener);
      return { dispose: () => editorWatchers.delete(listener) };
    },
    suggestionPending: (document, dismiss) => pending.add(document.uri.toString(), dismiss),
    refreshing,
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
    server,
    widget,
    shownAgain,
    /** The editor shows `text` at `position`, made to show it anew. */
    shows: (position: vscode.Position, text: string) => {
      shownAgain.push(`${position.line}:${position.character} ${text}`);
    },
    pending,
    refreshing,
    /** `ms` pass for the refreshing suggestion's timers. */
    refreshTimePasses: (ms: number) => {
      for (const timer of [...refreshTimers]) {
        if (timer.ms <= ms) {
          refreshTimers.delete(timer);
          timer.run();
        }
      }
    },
    ticks,
    settings,
    status: server.change,
    /** An answer with `text` goes to the editor, over the widget's selected item if it is open. */
    answeredAt: (position: vscode.Position = cursor, text = "_") => {
      growth.answered(document, position, text, widget.selected);
    },
    /** The editor asks at `position`, over the widget's selected item if it is open. */
    asksAt: (position: vscode.Position = cursor) => {
      growth.editorAsked(document, position, widget.selected);
    },
    /** The time between two asks passes, and what it started settles. */
    tick: async () => {
      for (const { tick } of [...ticks]) {
        tick();
      }
      await settled();
    },
    edit: () => {
      documentState.version += 1;
      tell(placeWatchers);
    },
    moveCursor: () => {
      tell(placeWatchers);
    },
    /**
     * A second cursor is added, or removed again, the first staying at the suggestion's place
     * (its place is not left: the suggestion goes on growing).
     */
    secondCursor: (added: boolean) => {
      cursors.second = added;
    },
    switchEditor: () => {
      tell(editorWatchers);
    },
    /** What the extension's Escape binding does in the document's editor while its suggestion is pending. */
    escape: () => {
      pending.dismiss(document.uri.toString());
    },
    /** The editor, made to show it anew, asks and shows the server's answer (the middleware). */
    showing: (show: typeof onShow) => {
      onShow = show;
    },
    /**
     * Holds the server's answers until the returned function gives them, all of them or only
     * the one asked last.
     */
    holdAnswers: () => {
      const held: (() => void)[] = [];
      answer = (text) =>
        new Promise((resolve) => {
          held.push(() => {
            resolve(text);
          });
        });
      return (which: "all" | "last" = "all") => {
        for (const give of which === "all" ? held.splice(0) : held.splice(-1)) {
          give();
        }
      };
    },
    /** Holds the editor's hiding of the suggestion until the returned function ends it. */
    holdHides: () => {
      const held: (() => void)[] = [];
      hide = (then) =>
        new Promise((resolve) => {
          held.push(() => {
            then();
            resolve();
          });
        });
      return () => {
        held.shift()?.();
      };
    },
  };
}

/**
 * The editor of `editor()` showing what it is made to show anew, as VS Code does: it asks its
 * provider, which answers with the text at hand, else asks the server.
 */
function showingEditor(status: ServerStatus = generating) {
  const place = editor(status);
  place.showing((position) => {
    place.asksAt(position);
    const selected = place.widget.selected;
    const atHand = answerItems(place.growth.answerToShow(place.document, position, selected))[0];
    const text = typeof atHand?.insertText === "string" ? atHand.insertText : place.server.text;
    place.shows(position, text);
    place.answeredAt(position, text);
  });
  return place;
}

describe("a suggestion answered while the server generates it", () => {
  it("shows the server's text each time it has grown, while the server generates", async () => {
    const place = showingEditor();
    place.answeredAt(cursor, "_");
    assert.deepEqual(place.shownAgain, [], "the answer itself is on screen already");
    place.server.text = "_ids";
    await place.tick();
    await place.tick(); // nothing more yet: the editor is left alone
    place.server.text = "_ids = tokenizer(";
    await place.tick();
    assert.deepEqual(place.shownAgain, ["3:16 _ids", "3:16 _ids = tokenizer("]);
    assert.equal(place.server.asked, 3, "the server is asked at every tick");
    assert.deepEqual(
      [...place.ticks].map(({ ms }) => ms),
      [GROW_EVERY_MS],
    );
    assert.deepEqual(place.pending.documents, [tokens], "Escape must reach it while it grows");
  });

  it("shows the whole text once the server is ready, then is asked for no more", async () => {
    const place = showingEditor();
    place.answeredAt(cursor, "_");
    place.server.text = "_ids = tokenizer(text)\nreturn ids";
    place.status(ready);
    await settled();
    assert.deepEqual(place.shownAgain, ["3:16 _ids = tokenizer(text)\nreturn ids"]);
    await place.tick();
    place.status(generating);
    place.status(ready);
    await settled();
    assert.equal(place.server.asked, 1);
    assert.deepEqual(place.pending.documents, []);
    assert.equal(place.growth.growing, false);
  });

  it("is left as it is when the server has already finished it", async () => {
    const place = showingEditor(ready);
    place.answeredAt();
    place.server.text = "_ids";
    await place.tick();
    place.status(generating);
    place.status(ready);
    await settled();
    assert.deepEqual(place.shownAgain, []);
    assert.equal(place.server.asked, 0);
    assert.deepEqual(place.pending.documents, []);
  });

  it("is not shown again when the server goes away or loads another model", async () => {
    for (const next of [undefined, loading]) {
      const place = showingEditor();
      place.answeredAt();
      place.server.text = "_ids";
      place.status(next);
      await place.tick();
      assert.deepEqual(place.shownAgain, [], String(next?.state));
      assert.equal(place.growth.growing, false);
    }
  });

  it("asks the server once at a time, however slow its answer", async () => {
    const place = showingEditor();
    const give = place.holdAnswers();
    place.answeredAt();
    await place.tick();
    await place.tick();
    await place.tick();
    assert.equal(place.server.asked, 1);
    place.server.text = "_ids";
    give();
    await settled();
    await place.tick();
    assert.equal(place.server.asked, 2);
  });

  it("shows the whole text last, though the server answers it before an ask on its way", async () => {
    const place = showingEditor();
    const give = place.holdAnswers();
    const endHide = place.holdHides(); // VS Code takes a few milliseconds to hide it
    place.answeredAt(cursor, "_");
    place.server.text = "_ids";
    await place.tick(); // its ask is on its way when the server becomes ready
    place.server.text = "_ids = tokenizer(text)";
    place.status(ready);
    await settled();
    for (let step = 0; step < 2; step++) {
      give("last");
      await settled();
    }
    for (let step = 0; step < 2; step++) {
      endHide();
      await settled();
      give("last");
      await settled();
    }
    assert.deepEqual(place.shownAgain, ["3:16 _ids", "3:16 _ids = tokenizer(text)"]);
    assert.equal(place.growth.growing, false);
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
    it(when, async () => {
      const place = showingEditor();
      place.answeredAt();
      place.server.text = "_ids";
      await place.tick();
      stop(place);
      place.server.text = "_ids = tokenizer(";
      await place.tick();
      place.status(ready);
      await settled();
      assert.deepEqual(place.shownAgain, ["3:16 _ids"], "not shown again, not even whole");
      assert.deepEqual(place.pending.documents, [], "Escape is VS Code's again");
      assert.equal(place.growth.growing, false);
    });

    it(`${when}, with the server's answer on its way`, async () => {
      const place = showingEditor();
      const give = place.holdAnswers();
      place.answeredAt();
      place.server.text = "_ids";
      await place.tick();
      stop(place);
      give();
      await settled();
      assert.deepEqual(place.shownAgain, []);
    });

    it(`${when} while its last ask waits for one on its way: the server is not asked`, async () => {
      const place = showingEditor();
      const give = place.holdAnswers();
      place.answeredAt();
      place.server.text = "_ids";
      await place.tick();
      place.status(ready); // the last ask waits for the tick's
      await settled();
      stop(place);
      give();
      await settled();
      // An ask for a place the user has left would start a generation there nobody waits for.
      assert.equal(place.server.asked, 1);
      assert.deepEqual(place.shownAgain, []);
    });
  }

  it("when the user turns it down while the editor hides it to show more", async () => {
    const place = editor();
    // Escape comes while the editor hides the suggestion, before it asks again.
    place.showing(() => undefined);
    const growth = new SuggestionGrowth({
      status: { serverStatus: generating, onServerStatusChanged: () => ({ dispose: () => 0 }) },
      inlineCompletions: () => true,
      serverAnswer: () => Promise.resolve(answerOf("_ids")),
      showAgain: (_document, _position, stillWanted) => {
        place.escape();
        const asked = stillWanted();
        if (asked) {
          place.shownAgain.push("shown after Escape");
        }
        return Promise.resolve(asked);
      },
      watchPlace: () => ({ dispose: () => 0 }),
      onActiveEditorChanged: () => ({ dispose: () => 0 }),
      suggestionPending: (document, dismiss) => place.pending.add(document.uri.toString(), dismiss),
      every: (_ms, tick) => {
        place.ticks.add({ ms: 0, tick });
        return {
          dispose: () => {
            place.ticks.clear();
          },
        };
      },
    });
    growth.answered(place.document, cursor, "_");
    await place.tick();
    assert.deepEqual(place.shownAgain, []);
    assert.equal(growth.growing, false);
  });

  it("when VS Code's suggest widget opens over it: the editor asks over the widget's item", async () => {
    const place = showingEditor();
    place.answeredAt();
    place.server.text = "_ids";
    await place.tick();
    place.widget.selected = item("_identifiers");
    place.asksAt();
    place.server.text = "_ids = tokenizer(";
    await place.tick();
    assert.deepEqual(place.shownAgain, ["3:16 _ids"]);
    assert.equal(place.growth.growing, false);
    assert.deepEqual(place.pending.documents, []);
  });

  it("not when the editor asks at another place, or at its place as it shows it", async () => {
    const place = showingEditor();
    place.answeredAt();
    place.widget.selected = item("_identifiers");
    place.asksAt(at(4, 2));
    place.widget.selected = undefined;
    place.asksAt(cursor);
    place.server.text = "_ids";
    await place.tick();
    assert.deepEqual(place.shownAgain, ["3:16 _ids"]);
    assert.equal(place.growth.growing, true);
  });

  it("when inline completions are turned off", async () => {
    const place = showingEditor();
    place.answeredAt();
    place.server.text = "_ids";
    await place.tick();
    place.settings.inlineCompletions = false;
    place.server.text = "_ids = tokenizer(";
    await place.tick();
    place.settings.inlineCompletions = true;
    await place.tick();
    place.status(ready);
    await settled();
    assert.deepEqual(place.shownAgain, ["3:16 _ids"]);
    assert.deepEqual(place.pending.documents, []);
  });

  it("when inline completions are turned off with the server's answer on its way", async () => {
    const place = showingEditor();
    const give = place.holdAnswers();
    place.answeredAt();
    place.server.text = "_ids";
    await place.tick();
    place.settings.inlineCompletions = false;
    give();
    await settled();
    assert.deepEqual(place.shownAgain, []);
  });

  it("when inline completions are turned off before the whole text would show", async () => {
    const place = showingEditor();
    place.answeredAt();
    place.server.text = "_ids";
    place.settings.inlineCompletions = false;
    place.status(ready);
    await settled();
    assert.deepEqual(place.shownAgain, []);
  });

  it("when an answer at another place comes: that one grows instead", async () => {
    const place = showingEditor();
    place.answeredAt(cursor, "_");
    place.server.text = "_ids";
    await place.tick();
    place.answeredAt(at(4, 2), "(");
    assert.equal(place.ticks.size, 1, "one suggestion grows at a time");
    place.server.text = "(text)";
    await place.tick();
    place.server.text = "(text)\n";
    place.status(ready);
    await settled();
    assert.deepEqual(place.shownAgain, ["3:16 _ids", "4:2 (text)", "4:2 (text)\n"]);
    assert.equal(place.ticks.size, 0);
  });

  it("and an answer after the client stopped starts nothing", async () => {
    const place = showingEditor();
    place.growth.dispose();
    place.answeredAt();
    place.server.text = "_ids";
    await place.tick();
    assert.deepEqual(place.shownAgain, []);
    assert.deepEqual(place.pending.documents, []);
  });
});

describe("a suggestion answered over VS Code's suggest widget", () => {
  /** The widget open over `is` (3:14-3:16), `island` selected: the suggestion replaces `is`. */
  function overTheWidget() {
    const place = showingEditor();
    place.widget.selected = item("island");
    place.server.text = "island is";
    place.answeredAt(cursor, "island is");
    return place;
  }

  it("grows while the server generates it, asked and shown over the selected item", async () => {
    const place = overTheWidget();
    place.server.text = "island is a";
    await place.tick();
    place.server.text = "island is a country";
    place.status(ready);
    await settled();
    assert.deepEqual(place.shownAgain, ["3:16 island is a", "3:16 island is a country"]);
    assert.deepEqual(place.server.askedOver, ["island", "island"]);
    assert.equal(place.growth.growing, false);
  });

  it("stops growing when another item is selected, and grows that one's suggestion", async () => {
    const place = overTheWidget();
    place.server.text = "island is a";
    await place.tick();
    place.widget.selected = item("its");
    place.asksAt(); // VS Code asks for the newly selected item
    place.server.text = "island is a country";
    await place.tick();
    assert.deepEqual(place.shownAgain, ["3:16 island is a"]);
    assert.equal(place.growth.growing, false);
    place.server.text = "its own";
    place.answeredAt(cursor, "its own");
    place.server.text = "its own island";
    await place.tick();
    assert.deepEqual(place.shownAgain, ["3:16 island is a", "3:16 its own island"]);
    assert.deepEqual(place.server.askedOver, ["island", "its"]);
  });

  it("stops growing when the widget closes: the editor asks there without the item", async () => {
    const place = overTheWidget();
    place.widget.selected = undefined;
    place.asksAt();
    place.server.text = "island is a";
    await place.tick();
    place.status(ready);
    await settled();
    assert.deepEqual(place.shownAgain, []);
    assert.equal(place.server.asked, 0);
    assert.deepEqual(place.pending.documents, []);
  });

  it("is not refreshing while the editor hides it: Tab is the widget's", async () => {
    const place = overTheWidget();
    let refreshingWhileHidden: boolean | undefined;
    place.showing(() => {
      refreshingWhileHidden = place.refreshing.refreshing;
    });
    place.server.text = "island is a";
    await place.tick();
    assert.equal(refreshingWhileHidden, false);
  });
});

describe("a growing suggestion while the editor hides it to show more", () => {
  it("is refreshing with the text shown before, until its grown text shows", async () => {
    const place = editor();
    /** What Tab would accept the moment the editor hid the suggestion. */
    const whileHidden: unknown[] = [];
    place.showing(() => {
      whileHidden.push({ ...place.refreshing.take() });
    });
    place.answeredAt(cursor, "_");
    assert.equal(place.refreshing.refreshing, false, "nothing is hidden yet");
    place.server.text = "_ids";
    await place.tick();
    assert.deepEqual(whileHidden, [
      { document: place.document, version: 1, position: cursor, text: "_" },
    ]);
  });

  it("stays refreshing a moment after its grown text went to the editor, then ends", async () => {
    const place = editor();
    place.showing(() => undefined);
    place.answeredAt(cursor, "_");
    place.server.text = "_ids";
    await place.tick();
    assert.equal(place.refreshing.refreshing, true, "hidden, no grown text yet");
    place.answeredAt(cursor, "_ids"); // the editor's ask, answered
    assert.equal(place.refreshing.refreshing, true, "VS Code shows it a moment later");
    place.refreshTimePasses(SHOW_GRACE_MS);
    assert.equal(place.refreshing.refreshing, false);
  });

  it("ends at once when the growth stops: an edit, Escape, the cursor or the editor moving", async () => {
    const stops: [string, (place: ReturnType<typeof editor>) => void][] = [
      [
        "an edit",
        (place) => {
          place.edit();
        },
      ],
      [
        "Escape",
        (place) => {
          place.escape();
        },
      ],
      [
        "the cursor",
        (place) => {
          place.moveCursor();
        },
      ],
      [
        "another editor",
        (place) => {
          place.switchEditor();
        },
      ],
    ];
    for (const [name, stop] of stops) {
      const place = editor();
      place.showing(() => undefined);
      place.answeredAt(cursor, "_");
      place.server.text = "_ids";
      await place.tick();
      stop(place);
      assert.equal(place.refreshing.take(), undefined, name);
    }
  });

  it("shows the whole text at the end refreshing too, until it goes to the editor", async () => {
    const place = editor();
    place.showing(() => undefined);
    place.answeredAt(cursor, "_");
    place.server.text = "_ids = tokenizer(text)";
    place.status(ready);
    await settled();
    assert.equal(place.growth.growing, false, "its last ask made");
    assert.equal(place.refreshing.refreshing, true, "the whole text not shown yet");
    place.answeredAt(cursor, "_ids = tokenizer(text)");
    place.refreshTimePasses(SHOW_GRACE_MS);
    assert.equal(place.refreshing.refreshing, false);
  });
});

describe("a growing suggestion shown anew through the middleware", () => {
  type Result = vscode.InlineCompletionList | null;
  const invoked = { triggerKind: 0 } as unknown as vscode.InlineCompletionContext;
  const nothing = { items: [] } as unknown as Result;

  /** The middleware of a client, wired to the growth of `place` as clientMiddleware.ts does. */
  function growingMiddleware(place: ReturnType<typeof editor>, debounceMs: number) {
    const provide = inlineCompletionMiddleware(
      quietHooks({
        currentSettings: () => ({ inlineCompletions: true, debounceMs }),
        suggestionPending: (document, dismiss) =>
          place.pending.add(document.uri.toString(), dismiss),
        editorAsked: (document, position, selectedItem) => {
          place.growth.editorAsked(document, position, selectedItem);
        },
        answerAtHand: (document, position, selectedItem) =>
          place.growth.answerToShow(document, position, selectedItem),
        suggestionShown: (document, position, text, overSuggestWidget) => {
          place.growth.answered(document, position, text, overSuggestWidget);
        },
      }),
    ).provideInlineCompletionItems;
    assert.ok(provide);
    return provide;
  }

  /** An editor whose asks go through that middleware. */
  function throughMiddleware() {
    const place = editor();
    let editorRequests = 0;
    // The editor's asks are the user's (`Invoke`): a debounce would hold them for a minute.
    const provide = growingMiddleware(place, 60_000);
    // VS Code asks again: a request of the user's, which the server answers at once.
    const ask = (position: vscode.Position, answer: Result) => {
      const token = new CancellationTokenSource().token as unknown as vscode.CancellationToken;
      return Promise.resolve(
        provide(place.document, position, invoked, token, () => {
          editorRequests += 1;
          return Promise.resolve(answer);
        }),
      );
    };
    /** VS Code asks again and shows the answer. */
    const askAndShow = async (position: vscode.Position) => {
      const text = answerItems(await ask(position, answerOf(place.server.text)))[0]?.insertText;
      if (typeof text === "string") {
        place.shows(position, text);
      }
    };
    place.showing((position) => {
      void askAndShow(position);
    });
    return { place, ask, askAndShow, requests: () => editorRequests };
  }

  it("grows one suggestion however many of its answers come", async () => {
    const { place, ask, askAndShow, requests } = throughMiddleware();
    await ask(cursor, answerOf("_")); // the first answer, cut by the time budget
    for (let tick = 1; tick <= 4; tick++) {
      place.server.text += "i";
      await place.tick();
      assert.equal(place.server.asked, tick);
      assert.equal(place.ticks.size, 1);
    }
    // The whole text shows while another generation has begun: its answer starts nothing.
    place.server.text += "ds";
    place.showing((position) => {
      place.status(generating);
      void askAndShow(position);
    });
    place.status(ready);
    await settled();
    assert.equal(place.growth.growing, false);
    place.server.text += " =";
    await place.tick();
    assert.equal(place.server.asked, 5);
    assert.deepEqual(
      place.shownAgain,
      ["_i", "_ii", "_iii", "_iiii", "_iiiids"].map((text) => `3:16 ${text}`),
    );
    assert.equal(
      requests(),
      1,
      "the editor's asks to show it grown are answered with the text fetched",
    );
  });

  it("answers the editor's ask with the text fetched only once, at its place and version", async () => {
    const { place, ask, requests } = throughMiddleware();
    place.showing(() => undefined); // the editor is made to show it, and has not asked yet
    await ask(cursor, answerOf("_"));
    place.server.text = "_ids";
    await place.tick();
    assert.deepEqual(
      answerItems(await ask(at(3, 17), answerOf("="))).map((item) => item.insertText),
      ["="],
    );
    place.edit();
    assert.deepEqual(
      answerItems(await ask(cursor, answerOf("ids"))).map((item) => item.insertText),
      ["ids"],
    );
    assert.equal(requests(), 3, "asked elsewhere or after an edit, the server answers");
  });

  it("leaves the text fetched for an ask over VS Code's suggest widget to the server", async () => {
    const { place, requests } = throughMiddleware();
    const provide = growingMiddleware(place, 0);
    place.showing(() => undefined);
    place.growth.answered(place.document, cursor, "_");
    place.server.text = "_ids";
    await place.tick();
    const selected = {
      triggerKind: 0,
      selectedCompletionInfo: { range: {}, text: "_identifiers" },
    } as unknown as vscode.InlineCompletionContext;
    const token = new CancellationTokenSource().token as unknown as vscode.CancellationToken;
    const answer = await provide(place.document, cursor, selected, token, () =>
      Promise.resolve(answerOf("_identifiers = []")),
    );
    assert.deepEqual(
      answerItems(answer).map((item) => item.insertText),
      ["_identifiers = []"],
    );
    assert.equal(requests(), 0);
  });

  it("asks the server again for an ask after the one it was made to show", async () => {
    const { place, ask, requests } = throughMiddleware();
    place.showing(() => undefined);
    await ask(cursor, answerOf("_"));
    place.server.text = "_ids";
    await place.tick();
    assert.deepEqual(
      answerItems(await ask(cursor, answerOf("_id"))).map((item) => item.insertText),
      ["_ids"],
    );
    assert.deepEqual(
      answerItems(await ask(cursor, answerOf("_ids ="))).map((item) => item.insertText),
      ["_ids ="],
    );
    assert.equal(requests(), 2);
  });

  it("grows an answer over VS Code's suggest widget over its item, not over another", async () => {
    const { place } = throughMiddleware();
    /** The editor's requests that went to the server. */
    let requests = 0;
    const provide = growingMiddleware(place, 0);
    place.showing(() => undefined); // the editor is made to show it, and has not asked yet
    const token = new CancellationTokenSource().token as unknown as vscode.CancellationToken;
    const askOver = (selected: vscode.SelectedCompletionInfo, answer: Result) =>
      Promise.resolve(
        provide(
          place.document,
          cursor,
          { ...invoked, selectedCompletionInfo: selected },
          token,
          () => {
            requests += 1;
            return Promise.resolve(answer);
          },
        ),
      );
    await askOver(item("island"), answerOf("island is"));
    place.server.text = "island is a";
    await place.tick();
    assert.deepEqual(place.server.askedOver, ["island"]);
    // Made to show it anew, the editor asks over the same item: the text fetched answers.
    assert.deepEqual(
      answerItems(await askOver(item("island"), answerOf("island"))).map((it) => it.insertText),
      ["island is a"],
    );
    assert.equal(place.growth.growing, true);
    assert.equal(requests, 1, "only the first ask went to the server");
    // Another item selected: the editor's ask goes to the server, and the growth stops.
    place.server.text = "island is a country";
    await place.tick();
    const otherItem = await askOver(item("its"), answerOf("its own"));
    assert.deepEqual(
      answerItems(otherItem).map((it) => it.insertText),
      ["its own"],
    );
    // Back on the first item, the server answers: the text fetched for it is not shown.
    const back = await askOver(item("island"), answerOf("island is a country, and"));
    assert.deepEqual(
      answerItems(back).map((it) => it.insertText),
      ["island is a country, and"],
    );
    assert.equal(requests, 3);
  });

  it("gives no later ask the text fetched for an ask the editor never made", async () => {
    const { place, ask, requests } = throughMiddleware();
    await ask(cursor, answerOf("_"));
    place.secondCursor(true); // VS Code is not made to ask again meanwhile
    place.server.text = "_ids";
    await place.tick();
    place.server.text = "_ids = tokenizer(text)";
    place.status(ready);
    await settled();
    assert.equal(place.growth.growing, false);
    assert.deepEqual(place.shownAgain, []);
    // Back to one cursor, the same place and version, asked after the model changed: the
    // server's answer shows, not the text fetched before.
    place.secondCursor(false);
    assert.deepEqual(
      answerItems(await ask(cursor, answerOf("_tokens"))).map((item) => item.insertText),
      ["_tokens"],
    );
    assert.equal(requests(), 2);
  });

  it("gives the text fetched for the editor's ask to no ask after one elsewhere", async () => {
    const { place, ask, requests } = throughMiddleware();
    place.showing(() => undefined); // the editor is made to show it, and has not asked yet
    await ask(cursor, answerOf("_"));
    place.server.text = "_ids = tokenizer(text)";
    place.status(ready);
    await settled();
    assert.equal(place.growth.growing, false, "its last ask made");
    // The editor asks elsewhere first (no cursor move is seen once the growth has ended),
    // then back at the suggestion's place, the document unchanged.
    await ask(at(3, 17), answerOf("="));
    assert.deepEqual(
      answerItems(await ask(cursor, answerOf("_tokens"))).map((item) => item.insertText),
      ["_tokens"],
    );
    assert.equal(requests(), 3);
  });

  /**
   * A suggestion growing over the suggest widget's `island` through the middleware, after
   * Escape closed the widget: VS Code hid the suggestion without asking again. Made to show it
   * grown, the editor asks without the item; the server, asked so, would stop generating the
   * item's continuation and make another (the plain text's), ` Paris.`.
   */
  async function overAClosedWidget() {
    const { place } = throughMiddleware();
    const provide = growingMiddleware(place, 0);
    const token = new CancellationTokenSource().token as unknown as vscode.CancellationToken;
    /** The item each of the editor's asks that went to the server carried, "-" for none. */
    const serverAsks: string[] = [];
    const askOver = (selected: vscode.SelectedCompletionInfo | undefined, answer: Result) =>
      Promise.resolve(
        provide(
          place.document,
          cursor,
          { ...invoked, selectedCompletionInfo: selected },
          token,
          () => {
            serverAsks.push(selected?.text ?? "-");
            return Promise.resolve(answer);
          },
        ),
      );
    await askOver(item("island"), answerOf("island is"));
    place.showing((position) => {
      void askOver(undefined, answerOf(" Paris.")).then((answer) => {
        const text = answerItems(answer)[0]?.insertText;
        if (typeof text === "string") {
          place.shows(position, text);
        }
      });
    });
    return { place, serverAsks };
  }

  it("shows nothing and stops when Escape has closed the suggest widget over it", async () => {
    const { place, serverAsks } = await overAClosedWidget();
    place.server.text = "island is a";
    await place.tick();
    assert.deepEqual(serverAsks, ["island"], "the editor's ask without the item stayed here");
    assert.deepEqual(place.shownAgain, []);
    assert.equal(place.growth.growing, false, "the editor no longer asks over the item");
    place.server.text = "island is a country";
    await place.tick();
    place.status(ready);
    await settled();
    assert.deepEqual(place.shownAgain, []);
    assert.deepEqual(place.server.askedOver, ["island"]);
  });

  it("shows nothing either when the widget closed before the whole text was to show", async () => {
    const { place, serverAsks } = await overAClosedWidget();
    place.server.text = "island is a country";
    place.status(ready);
    await settled();
    assert.deepEqual(serverAsks, ["island"], "the editor's ask without the item stayed here");
    assert.deepEqual(place.shownAgain, []);
    assert.deepEqual(place.server.askedOver, ["island"]);
  });

  it("grows nothing from an empty answer", async () => {
    const { place, ask } = throughMiddleware();
    await ask(cursor, nothing);
    await ask(cursor, answerOf(""));
    assert.equal(place.growth.growing, false);
    place.server.text = "_ids";
    await place.tick();
    assert.deepEqual(place.shownAgain, []);
  });
});
