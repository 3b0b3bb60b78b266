import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type * as vscode from "vscode";
import { CancellationTokenSource } from "vscode-languageserver-protocol";
import {
  type InlineRequestHooks,
  inlineCompletionMiddleware,
} from "../../src/inlineCompletionMiddleware";
import { modelLoaded, type ServerStatusSource } from "../../src/modelLoad";
import { PendingSuggestions } from "../../src/pendingSuggestions";
import type { ServerStatus } from "../../src/protocol";
import { readyStatus } from "./statusFixtures";

/** The URI of the document the suggestions are asked in. */
const capital = "file:///tmp/capital.txt";

// The middleware only passes these through; plain objects stand in for VS Code's.
const position = { line: 0, character: 24 } as unknown as vscode.Position;
const automatic = { triggerKind: 1 } as unknown as vscode.InlineCompletionContext;
const invoked = { triggerKind: 0 } as unknown as vscode.InlineCompletionContext;
const suggestion = { items: [{ insertText: " Paris." }] } as unknown as vscode.InlineCompletionList;
const nothing = { items: [] } as unknown as vscode.InlineCompletionList;

type Result = vscode.InlineCompletionList | null;
type Next = (
  document: vscode.TextDocument,
  position: vscode.Position,
  context: vscode.InlineCompletionContext,
  token: vscode.CancellationToken,
) => Promise<Result>;

/**
 * A document whose edits the test makes: each one raises the version and tells the watchers; a
 * cursor move tells them without an edit.
 */
function editableDocument() {
  const state = { uri: capital, version: 1 };
  const watchers = new Set<() => void>();
  return {
    document: state as unknown as vscode.TextDocument,
    watchers,
    edit: () => {
      state.version += 1;
      for (const watcher of watchers) {
        watcher();
      }
    },
    moveCursor: () => {
      for (const watcher of watchers) {
        watcher();
      }
    },
  };
}

function recorder(
  settings: { inlineCompletions: boolean; debounceMs: number },
  now?: () => number,
  canSuggest: () => boolean = () => true,
  serverStatus: ServerStatusSource = loadingServer().source,
) {
  const events: string[] = [];
  const asked: [vscode.TextDocument, vscode.Position][] = [];
  const { document, watchers, edit, moveCursor } = editableDocument();
  const pending = new PendingSuggestions(() => undefined);
  const hooks: InlineRequestHooks = {
    currentSettings: () => settings,
    cannotSuggest: () => {
      if (!canSuggest()) {
        events.push("told why not");
      }
      return !canSuggest();
    },
    untilModelLoaded: (cancel) => modelLoaded(serverStatus, cancel),
    requestStarted: () => events.push("started"),
    requestFinished: (_ms, cancelled) => events.push(cancelled ? "cancelled" : "finished"),
    watchPlace: (_document, _position, listener) => {
      watchers.add(listener);
      return { dispose: () => watchers.delete(listener) };
    },
    askAgain: (document, position) => asked.push([document, position]),
    suggestionPending: (document, dismiss) => pending.add(document.uri.toString(), dismiss),
    ...(now === undefined ? {} : { now }),
  };
  const middleware = inlineCompletionMiddleware(hooks);
  const provide = middleware.provideInlineCompletionItems;
  assert.ok(provide);
  /** What the session does when it stops the client (a restart, or VS Code closing). */
  const stopClient = () => {
    middleware.dispose();
  };
  const request = (
    token: vscode.CancellationToken,
    next: Next,
    context: vscode.InlineCompletionContext = automatic,
  ) => Promise.resolve(provide(document, position, context, token, next));
  /** What the extension's Escape binding does in the document's editor while its suggestion is pending. */
  const escape = () => {
    pending.dismiss(document.uri.toString());
  };
  return {
    events,
    asked,
    document,
    watchers,
    edit,
    moveCursor,
    request,
    pending,
    escape,
    stopClient,
  };
}

function tokenSource() {
  const source = new CancellationTokenSource();
  return { source, token: source.token as unknown as vscode.CancellationToken };
}

/** A server answer that the test gives when it wants, and the token the request was sent with. */
function pendingAnswer() {
  let give: (result: Result) => void = () => undefined;
  let sentWith: vscode.CancellationToken | undefined;
  const next: Next = (_d, _p, _c, token) => {
    sentWith = token;
    return new Promise<Result>((resolve) => {
      give = resolve;
    });
  };
  return {
    next,
    give: (result: Result) => {
      give(result);
    },
    sentWith: () => sentWith,
  };
}

const settled = () => new Promise((resolve) => setImmediate(resolve));

/** The server's status as the status bar keeps it: loading until `loaded`, if `loading`. */
function loadingServer(options: { loading?: boolean; weights?: boolean } = {}) {
  const listeners = new Set<() => void>();
  const model = "smollm2-135m";
  const source: { serverStatus: ServerStatus | undefined } & ServerStatusSource = {
    serverStatus:
      options.loading === true ? { ...readyStatus(model), state: "loading" } : readyStatus(model),
    onServerStatusChanged: (listener) => {
      listeners.add(listener);
      return { dispose: () => listeners.delete(listener) };
    },
  };
  const loaded = () => {
    source.serverStatus = { ...readyStatus(model), weightsLoaded: options.weights ?? true };
    for (const listener of [...listeners]) {
      listener();
    }
  };
  return { source, loaded, listeners };
}

/** A request the middleware has sent on to a server that answers when the test says. */
async function sentRequest(
  options: { now?: () => number; context?: vscode.InlineCompletionContext } = {},
) {
  const recorded = recorder({ inlineCompletions: true, debounceMs: 0 }, options.now);
  const { source, token } = tokenSource();
  const server = pendingAnswer();
  const result = recorded.request(token, server.next, options.context);
  await settled();
  const editorCancels = () => {
    source.cancel();
  };
  return { ...recorded, server, result, editorCancels };
}

describe("inline completion middleware", () => {
  it("asks the server once the debounce has passed and returns its answer", async () => {
    const { events, asked, request } = recorder({ inlineCompletions: true, debounceMs: 30 });
    const { token } = tokenSource();
    const result = await request(token, () => Promise.resolve(suggestion));
    assert.equal(result, suggestion);
    assert.deepEqual(events, ["started", "finished"]);
    assert.deepEqual(asked, []);
  });

  it("sends nothing for keystrokes that come faster than the debounce", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { events, request } = recorder({ inlineCompletions: true, debounceMs: 100 });
    let calls = 0;
    const next: Next = () => {
      calls += 1;
      return Promise.resolve(suggestion);
    };
    const pending: Promise<unknown>[] = [];
    for (let keystroke = 0; keystroke < 3; keystroke++) {
      const { source, token } = tokenSource();
      pending.push(request(token, next));
      if (keystroke < 2) {
        // VS Code cancels the previous request on the next keystroke.
        t.mock.timers.tick(99);
        source.cancel();
      }
    }
    t.mock.timers.tick(100);
    const results = await Promise.all(pending);
    assert.equal(calls, 1);
    assert.deepEqual(results, [null, null, suggestion]);
    assert.deepEqual(events, ["started", "finished"]);
  });

  it("sends a request the user asked for at once, whatever the debounce", async () => {
    const { events, request } = recorder({ inlineCompletions: true, debounceMs: 60_000 });
    const { token } = tokenSource();
    const result = await request(token, () => Promise.resolve(suggestion), invoked);
    assert.equal(result, suggestion);
    assert.deepEqual(events, ["started", "finished"]);
  });

  it("tells the user who asks why no suggestion can come, and sends nothing", async () => {
    const { events, request } = recorder(
      { inlineCompletions: true, debounceMs: 0 },
      undefined,
      () => false,
    );
    const { token } = tokenSource();
    const result = await request(
      token,
      () => {
        throw new Error("must not be called");
      },
      invoked,
    );
    assert.equal(result, null);
    assert.deepEqual(events, ["told why not"]);
  });

  it("tells nothing on automatic requests that can bring no suggestion", async () => {
    const { events, request } = recorder(
      { inlineCompletions: true, debounceMs: 0 },
      undefined,
      () => false,
    );
    const { token } = tokenSource();
    const result = await request(token, () => Promise.resolve(nothing));
    assert.equal(result, nothing);
    assert.deepEqual(events, ["started", "finished"]);
  });

  it("sends nothing when inline completions are off", async () => {
    const { events, request } = recorder({ inlineCompletions: false, debounceMs: 0 });
    const { token } = tokenSource();
    const result = await request(token, () => {
      throw new Error("must not be called");
    });
    assert.equal(result, null);
    assert.deepEqual(events, []);
  });

  it("ends the request (spinner off) also when it fails", async () => {
    const { events, request } = recorder({ inlineCompletions: true, debounceMs: 0 });
    const { token } = tokenSource();
    await assert.rejects(
      request(token, () => Promise.reject(new Error("server crashed"))),
      /server crashed/,
    );
    assert.deepEqual(events, ["started", "finished"]);
  });

  it("cancels the server's work when the document is edited during the request", async () => {
    const { events, asked, edit, watchers, server, result, editorCancels } = await sentRequest();
    // A keystroke: VS Code cancels its request, and the edit reaches the extension.
    editorCancels();
    edit();
    assert.equal(server.sentWith()?.isCancellationRequested, true);
    server.give(null); // what vscode-languageclient returns for a cancelled request
    assert.equal(await result, null);
    await settled();
    assert.deepEqual(events, ["started", "cancelled"]);
    assert.deepEqual(asked, []);
    assert.equal(watchers.size, 0);
  });

  it("cancels it also when the edit comes after VS Code stopped waiting", async () => {
    const { events, edit, server, result, editorCancels } = await sentRequest();
    editorCancels();
    assert.equal(await result, null);
    assert.equal(server.sentWith()?.isCancellationRequested, false);
    edit();
    assert.equal(server.sentWith()?.isCancellationRequested, true);
    server.give(null);
    await settled();
    assert.deepEqual(events, ["started", "cancelled"]);
  });

  it("cancels it when the cursor leaves the place after VS Code stopped waiting", async () => {
    const { events, asked, moveCursor, server, result, editorCancels } = await sentRequest();
    editorCancels();
    assert.equal(await result, null);
    moveCursor();
    assert.equal(server.sentWith()?.isCancellationRequested, true);
    server.give(null);
    await settled();
    assert.deepEqual(events, ["started", "cancelled"]);
    assert.deepEqual(asked, []);
  });

  it("keeps the request when VS Code stops waiting by itself, and asks again with its answer", async () => {
    const { events, asked, document, watchers, server, result, editorCancels } =
      await sentRequest();
    // No edit: VS Code gave up on its own (its suggest widget's 750 ms wait).
    editorCancels();
    assert.equal(await result, null);
    assert.equal(server.sentWith()?.isCancellationRequested, false);
    assert.deepEqual(asked, []);
    server.give(suggestion);
    await settled();
    assert.deepEqual(asked, [[document, position]]);
    assert.deepEqual(events, ["started", "finished"]);
    assert.equal(watchers.size, 0);
  });

  it("asks again after an answer later than VS Code waits, which it may have dropped", async (t) => {
    let clock = 0;
    const { asked, document, server, result } = await sentRequest({ now: () => clock });
    t.mock.timers.enable({ apis: ["setTimeout"] });
    // The answer comes 700 ms after VS Code asked; its cancellation has not arrived (yet).
    clock = 700;
    server.give(suggestion);
    assert.equal(await result, suggestion);
    // Not before VS Code has surely given up (at 710 ms, asked again from 860 ms), which would
    // stop the new request too.
    t.mock.timers.tick(159);
    assert.deepEqual(asked, []);
    t.mock.timers.tick(1);
    assert.deepEqual(asked, [[document, position]]);
  });

  it("does not ask again for an answer in time", async () => {
    let clock = 0;
    const { asked, server, result } = await sentRequest({ now: () => clock });
    clock = 400;
    server.give(suggestion);
    assert.equal(await result, suggestion);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.deepEqual(asked, []);
  });

  it("does not ask again for an empty answer, an edited document or a request the user made", async () => {
    const cases: { answer: Result; edited: boolean; context: vscode.InlineCompletionContext }[] = [
      { answer: nothing, edited: false, context: automatic },
      { answer: null, edited: false, context: automatic },
      { answer: suggestion, edited: true, context: automatic },
      { answer: suggestion, edited: false, context: invoked },
    ];
    for (const { answer, edited, context } of cases) {
      const { asked, edit, watchers, server, result, editorCancels } = await sentRequest({
        context,
      });
      editorCancels();
      assert.equal(await result, null);
      if (edited) {
        watchers.clear(); // the edit came, but the server answered before it was cancelled
        edit();
      }
      server.give(answer);
      await settled();
      assert.deepEqual(asked, [], JSON.stringify({ answer, edited, context }));
    }
  });
  it("keeps a suggestion pending until it is shown or asked for again", async () => {
    let clock = 0;
    const inTime = await sentRequest({ now: () => clock });
    assert.deepEqual(inTime.pending.documents, [capital]);
    clock = 400;
    inTime.server.give(suggestion);
    assert.equal(await inTime.result, suggestion);
    assert.deepEqual(inTime.pending.documents, []);

    const late = await sentRequest();
    late.editorCancels();
    assert.equal(await late.result, null);
    assert.deepEqual(
      late.pending.documents,
      [capital],
      "VS Code stopped waiting; the answer is still to come",
    );
    late.server.give(suggestion);
    await settled();
    assert.equal(late.asked.length, 1);
    assert.deepEqual(late.pending.documents, []);
  });

  it("turns a suggestion down on Escape after VS Code stopped waiting: nothing shows up later", async () => {
    const { asked, events, server, result, editorCancels, escape } = await sentRequest();
    editorCancels();
    assert.equal(await result, null);
    escape();
    assert.equal(server.sentWith()?.isCancellationRequested, true, "the server stops");
    server.give(suggestion); // the answer crossed the cancellation
    await settled();
    assert.deepEqual(asked, []);
    assert.deepEqual(events, ["started", "cancelled"]);
  });

  it("turns a suggestion down on Escape while VS Code still waits for it", async () => {
    const { asked, server, result, escape, pending } = await sentRequest();
    escape();
    assert.equal(server.sentWith()?.isCancellationRequested, true);
    server.give(suggestion); // the answer crossed the cancellation
    assert.equal(await result, null);
    await settled();
    assert.deepEqual(asked, []);
    assert.deepEqual(pending.documents, []);
  });

  it("sends nothing when Escape comes during the debounce", async () => {
    const { events, request, escape, pending } = recorder({
      inlineCompletions: true,
      debounceMs: 50,
    });
    const { token } = tokenSource();
    let calls = 0;
    const result = request(token, () => {
      calls += 1;
      return Promise.resolve(suggestion);
    });
    assert.deepEqual(pending.documents, [capital]);
    escape();
    assert.equal(await result, null);
    assert.equal(calls, 0);
    assert.deepEqual(events, []);
  });

  it("does not ask again after Escape between a late answer and asking again", async () => {
    let clock = 0;
    const { asked, server, result, escape, pending } = await sentRequest({ now: () => clock });
    clock = 700;
    server.give(suggestion);
    assert.equal(await result, suggestion);
    assert.deepEqual(pending.documents, [capital], "asking again is still to come");
    escape();
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(asked, []);
  });

  it("does not ask again once the client has stopped between a late answer and asking again", async () => {
    let clock = 0;
    const { asked, server, result, pending, stopClient } = await sentRequest({
      now: () => clock,
    });
    clock = 700;
    server.give(suggestion);
    assert.equal(await result, suggestion);
    assert.deepEqual(pending.documents, [capital], "asking again is still to come");
    stopClient(); // the user restarts the server, or closes the window
    assert.deepEqual(pending.documents, [], "Escape is VS Code's again");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.deepEqual(asked, []);
  });

  it("does not ask again with an answer that comes after the client has stopped", async () => {
    const { asked, server, result, stopClient, editorCancels } = await sentRequest();
    editorCancels(); // VS Code gave up waiting; the answer is still wanted
    assert.equal(await result, null);
    stopClient();
    server.give(suggestion);
    await settled();
    assert.deepEqual(asked, []);
  });

  it("sends a request made while the model loads once it has loaded, and asks again with its answer", async () => {
    const server = loadingServer({ loading: true });
    const { events, asked, document, watchers, request, pending } = recorder(
      { inlineCompletions: true, debounceMs: 0 },
      undefined,
      undefined,
      server.source,
    );
    const { source, token } = tokenSource();
    const answer = pendingAnswer();
    const result = request(token, answer.next);
    await settled();
    assert.equal(
      answer.sentWith(),
      undefined,
      "nothing is sent to a server that would say nothing",
    );
    source.cancel(); // VS Code stops waiting after 750 ms
    assert.equal(await result, null);
    assert.deepEqual(pending.documents, [capital], "the suggestion is still to come");
    server.loaded();
    await settled();
    assert.ok(answer.sentWith(), "sent once the model has loaded");
    answer.give(suggestion);
    await settled();
    assert.deepEqual(asked, [[document, position]], "VS Code is asked again: the ghost text shows");
    assert.deepEqual(events, ["started", "finished"]);
    assert.deepEqual(pending.documents, []);
    assert.equal(watchers.size, 0);
    assert.equal(server.listeners.size, 0);
  });

  it("answers a suggestion the user asked for while the model loads once it has loaded", async () => {
    const server = loadingServer({ loading: true });
    const { request } = recorder(
      { inlineCompletions: true, debounceMs: 0 },
      undefined,
      undefined,
      server.source,
    );
    const { token } = tokenSource();
    // As phi3-lsp does: nothing while the model loads.
    const loading = () => server.source.serverStatus?.state === "loading";
    const result = request(token, () => Promise.resolve(loading() ? nothing : suggestion), invoked);
    await settled();
    server.loaded();
    assert.equal(await result, suggestion);
  });

  it("tells the user who asked during the load why no suggestion comes from a model without weights", async () => {
    const server = loadingServer({ loading: true, weights: false });
    const { events, request } = recorder(
      { inlineCompletions: true, debounceMs: 0 },
      undefined,
      () => server.source.serverStatus?.weightsLoaded === true,
      server.source,
    );
    const { token } = tokenSource();
    const result = request(
      token,
      () => {
        throw new Error("must not be called");
      },
      invoked,
    );
    await settled();
    assert.deepEqual(events, [], "nothing to say before the load has ended");
    server.loaded();
    assert.equal(await result, null);
    assert.deepEqual(events, ["told why not"]);
  });

  it("sends nothing when the document is edited, or Escape pressed, while the model loads", async () => {
    for (const change of ["edit", "escape"] as const) {
      const server = loadingServer({ loading: true });
      const recorded = recorder(
        { inlineCompletions: true, debounceMs: 0 },
        undefined,
        undefined,
        server.source,
      );
      const { source, token } = tokenSource();
      let calls = 0;
      const result = recorded.request(token, () => {
        calls += 1;
        return Promise.resolve(suggestion);
      });
      await settled();
      source.cancel();
      assert.equal(await result, null);
      recorded[change]();
      await settled();
      assert.deepEqual(recorded.pending.documents, [], change);
      assert.equal(server.listeners.size, 0, change);
      server.loaded();
      await settled();
      assert.equal(calls, 0, change);
      assert.deepEqual(recorded.asked, [], change);
    }
  });
});
