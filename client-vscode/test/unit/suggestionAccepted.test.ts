import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type * as vscode from "vscode";
import { CancellationTokenSource } from "vscode-languageserver-protocol";
import { inlineCompletionMiddleware } from "../../src/inlineCompletionMiddleware";
import { PendingSuggestions } from "../../src/pendingSuggestions";
import {
  AsksAfterAccept,
  acceptedPlace,
  endOfInsertion,
  SUGGESTION_ACCEPTED_COMMAND,
} from "../../src/suggestionAccepted";
import { quietHooks } from "./middlewareFixtures";

const uri = "file:///tmp/notes.txt";
const document = { uri, version: 3 } as unknown as vscode.TextDocument;
const invoked = { triggerKind: 0 } as unknown as vscode.InlineCompletionContext;
const neverCancelled = {
  isCancellationRequested: false,
  onCancellationRequested: () => ({ dispose: () => undefined }),
} as unknown as vscode.CancellationToken;

/** The middleware of a client whose requests wait `debounceMs` when automatic or said so. */
function middlewareWith(debounceMs: number, askedAfterAccept?: AsksAfterAccept) {
  return inlineCompletionMiddleware(
    quietHooks({
      currentSettings: () => ({ inlineCompletions: true, debounceMs }),
      askedAfterAccept: (asked, at) => askedAfterAccept?.take(asked.uri.toString(), at) ?? false,
      suggestionPending: (document, dismiss) =>
        new PendingSuggestions(() => undefined).add(document.uri.toString(), dismiss),
    }),
  );
}

/** What VS Code gets from the middleware for a server answer of `items`. */
async function shownItems(
  items: { insertText: string; range?: { start: { line: number; character: number } } }[],
  at: { line: number; character: number },
): Promise<vscode.InlineCompletionItem[]> {
  const middleware = middlewareWith(0);
  const answer = { items } as unknown as vscode.InlineCompletionList;
  const result = await middleware.provideInlineCompletionItems?.(
    document,
    at as unknown as vscode.Position,
    invoked,
    neverCancelled,
    () => Promise.resolve(answer),
  );
  const list = result as vscode.InlineCompletionList;
  return list.items;
}

/** The place VS Code's run of an accepted item's command asks again at, if it has one. */
function askedAfterAccepting(item: vscode.InlineCompletionItem) {
  if (item.command?.command !== SUGGESTION_ACCEPTED_COMMAND) {
    return undefined;
  }
  return acceptedPlace(item.command.arguments ?? []);
}

describe("asking for the rest once a suggestion is accepted to its end", () => {
  const places = [
    {
      name: "has a suggestion ask again at its end when accepted (Tab, or its last word)",
      // "My favourite city is London because| it is famous for its"
      item: { insertText: " it is famous for its" },
      at: { line: 4, character: 35 },
      end: { line: 4, character: 56 },
    },
    {
      name: "ends a suggestion of several lines on its last line",
      item: { insertText: ".\nThe capital of Italy is" },
      at: { line: 0, character: 24 },
      end: { line: 1, character: 23 },
    },
    {
      name: "counts from the start of the range an item replaces",
      // The word "Par" replaced by "Paris.": the cursor ends after the whole insertion.
      item: { insertText: "Paris.", range: { start: { line: 0, character: 25 } } },
      at: { line: 0, character: 28 },
      end: { line: 0, character: 31 },
    },
  ];
  for (const { name, item: answered, at, end } of places) {
    it(name, async () => {
      const [item] = await shownItems([answered], at);
      assert.ok(item);
      assert.deepEqual(askedAfterAccepting(item), { uri, end });
    });
  }

  it("reads the end of an insertion with Windows line ends", () => {
    assert.deepEqual(endOfInsertion({ line: 2, character: 7 }, "one\r\ntwo"), {
      line: 3,
      character: 3,
    });
  });

  it("ignores arguments of another shape", () => {
    assert.equal(acceptedPlace([]), undefined);
    assert.equal(acceptedPlace([uri, "4", 56]), undefined);
  });

  it("sends the ask after an accept only once typing has paused, as typing's requests", async () => {
    // Tab, then the user types on: VS Code cancels the ask's request at the next keystroke.
    const asks = new AsksAfterAccept();
    let sent = 0;
    const middleware = middlewareWith(200, asks);
    const provide = (at: { line: number; character: number }, token: vscode.CancellationToken) =>
      middleware.provideInlineCompletionItems?.(
        document,
        at as unknown as vscode.Position,
        invoked,
        token,
        () => {
          sent += 1;
          return Promise.resolve({ items: [] } as unknown as vscode.InlineCompletionList);
        },
      );
    const end = { line: 4, character: 56 };
    asks.asked(uri, end);
    const typing = new CancellationTokenSource();
    const asked = provide(end, typing.token);
    typing.cancel();
    assert.equal(await asked, null);
    assert.equal(sent, 0);
    // The user's own request at the same place afterwards goes at once.
    await provide(end, neverCancelled);
    assert.equal(sent, 1);
  });
});
