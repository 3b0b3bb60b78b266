import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type * as vscode from "vscode";
import { CancellationTokenSource } from "vscode-languageserver-protocol";
import {
  type InlineRequestHooks,
  inlineCompletionMiddleware,
} from "../../src/inlineCompletionMiddleware";

// The middleware only passes these through; plain objects stand in for VS Code's.
const document = { uri: "file:///tmp/capital.txt" } as unknown as vscode.TextDocument;
const position = { line: 0, character: 24 } as unknown as vscode.Position;
const context = { triggerKind: 1 } as unknown as vscode.InlineCompletionContext;
const suggestion = { items: [{ insertText: " Paris." }] } as unknown as vscode.InlineCompletionList;

type Next = (
  document: vscode.TextDocument,
  position: vscode.Position,
  context: vscode.InlineCompletionContext,
  token: vscode.CancellationToken,
) => Promise<vscode.InlineCompletionList | null>;

function recorder(settings: { inlineCompletions: boolean; debounceMs: number }) {
  const events: string[] = [];
  const hooks: InlineRequestHooks = {
    currentSettings: () => settings,
    requestStarted: () => events.push("started"),
    requestFinished: (_ms, cancelled) => events.push(cancelled ? "cancelled" : "finished"),
  };
  const provide = inlineCompletionMiddleware(hooks).provideInlineCompletionItems;
  assert.ok(provide);
  const request = (token: vscode.CancellationToken, next: Next) =>
    provide(document, position, context, token, next);
  return { events, request };
}

function tokenSource() {
  const source = new CancellationTokenSource();
  return { source, token: source.token as unknown as vscode.CancellationToken };
}

describe("inline completion middleware", () => {
  it("asks the server once the debounce has passed and returns its answer", async () => {
    const { events, request } = recorder({ inlineCompletions: true, debounceMs: 30 });
    const { token } = tokenSource();
    let seenToken: vscode.CancellationToken | undefined;
    const result = await request(token, (_d, _p, _c, t) => {
      seenToken = t;
      return Promise.resolve(suggestion);
    });
    assert.equal(result, suggestion);
    // The very same token goes to the library, which turns its cancellation into $/cancelRequest.
    assert.equal(seenToken, token);
    assert.deepEqual(events, ["started", "finished"]);
  });

  it("sends nothing for keystrokes that come faster than the debounce", async () => {
    const { events, request } = recorder({ inlineCompletions: true, debounceMs: 100 });
    let calls = 0;
    const next: Next = () => {
      calls += 1;
      return Promise.resolve(suggestion);
    };
    const pending: Promise<unknown>[] = [];
    for (let keystroke = 0; keystroke < 3; keystroke++) {
      const { source, token } = tokenSource();
      pending.push(Promise.resolve(request(token, next)));
      if (keystroke < 2) {
        // VS Code cancels the previous request on the next keystroke.
        await new Promise((resolve) => setTimeout(resolve, 20));
        source.cancel();
      }
    }
    const results = await Promise.all(pending);
    assert.equal(calls, 1);
    assert.deepEqual(results, [null, null, suggestion]);
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
      Promise.resolve(request(token, () => Promise.reject(new Error("server crashed")))),
      /server crashed/,
    );
    assert.deepEqual(events, ["started", "finished"]);
  });

  it("reports a request cancelled while the server generates", async () => {
    const { events, request } = recorder({ inlineCompletions: true, debounceMs: 0 });
    const { source, token } = tokenSource();
    const result = await request(token, (_d, _p, _c, t) => {
      source.cancel();
      assert.equal(t.isCancellationRequested, true);
      return Promise.resolve(null);
    });
    assert.equal(result, null);
    assert.deepEqual(events, ["started", "cancelled"]);
  });
});
