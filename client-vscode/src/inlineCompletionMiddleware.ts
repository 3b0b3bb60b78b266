/**
 * Middleware around vscode-languageclient's built-in inline completion feature: wait out the
 * debounce, skip when suggestions are off, report start/end for the status bar and timing, and
 * keep an answer that comes after VS Code stopped waiting for it.
 *
 * An edit of the document, or the cursor leaving the place, cancels the request ($/cancelRequest:
 * the server stops the model). VS Code also gives up on an automatic request by itself: with its
 * default `editor.quickSuggestions` ("offWhenInlineCompletions" in code) it waits 750 ms after a
 * keystroke that would open its suggest widget (a word character) for inline suggestions, then
 * stops them and opens the widget instead. A model on a CPU often needs longer. Such a request
 * goes on, since its answer is still wanted there; once the answer is there, the editor is asked
 * again at the same place (or once it is active again, editorAsks.ts), and the server answers at
 * once from the suggestion it has just made.
 * An answer that comes about when VS Code gives up may cross its cancellation and be dropped
 * unseen: a late answer is followed by asking again too.
 *
 * A request made while the model loads (a restart after a crash, say) is sent once it has
 * loaded, as long as the document and the cursor stay (modelLoad.ts); its answer then comes
 * late, and asking again shows it.
 *
 * Until then the suggestion is pending: Escape turns it down (pendingSuggestions.ts). The
 * server stops, and neither the answer nor asking again shows anything.
 *
 * A growing suggestion made to show its grown text asks at its place with that text already at
 * hand (suggestionGrowth.ts): the request is answered with it at once, without the server.
 *
 * Only type imports from `vscode`, so this module runs (and is tested) under plain Node.
 */

import type * as vscode from "vscode";
import type { Middleware } from "vscode-languageclient";
import { answerItems } from "./answerItems";
import { type CancellationSignal, RequestCancellation, whenCancelled } from "./cancellation";
import { waitUnlessCancelled } from "./debounce";
import { withAcceptedCommand } from "./suggestionAccepted";

export interface InlineRequestHooks {
  /** Read on every request, so a settings change applies to the next keystroke. */
  currentSettings(): { readonly inlineCompletions: boolean; readonly debounceMs: number };
  /**
   * Asked when the user asks for a suggestion (by command or key): true if the server can make
   * none (a model without weights) and the user has been told why; no request is sent then.
   */
  cannotSuggest(): boolean;
  /**
   * Resolves true once the server's model is loaded (at once when it is), false if `cancel`
   * comes first: a server whose model loads answers nothing (modelLoad.ts).
   */
  untilModelLoaded(cancel: CancellationSignal): Promise<boolean>;
  requestStarted(): void;
  /** Always called once per started request, also when it fails or is cancelled. */
  requestFinished(roundTripMs: number, cancelled: boolean): void;
  /**
   * Calls `listener` when `document` is edited or its cursor leaves `position`, until the
   * returned handle is disposed.
   */
  watchPlace(
    document: vscode.TextDocument,
    position: vscode.Position,
    listener: () => void,
  ): { dispose(): void };
  /** Asks the editor for inline suggestions again, if its cursor is still at `position`. */
  askAgain(document: vscode.TextDocument, position: vscode.Position): void;
  /**
   * Whether a request VS Code sends as the user's came from asking again after a suggestion
   * was accepted (suggestionAccepted.ts): it is debounced as typing's are.
   */
  askedAfterAccept?(document: vscode.TextDocument, position: vscode.Position): boolean;
  /**
   * The request's suggestion in `document` is pending until the returned handle is disposed;
   * `dismiss` is called if the user turns it down first (Escape in that document's editor).
   */
  suggestionPending(document: vscode.TextDocument, dismiss: () => void): { dispose(): void };
  /**
   * The editor asks at `position` of `document`, over `selectedItem` of VS Code's open suggest
   * widget if any (a growing suggestion stops when that is not the item it extends).
   */
  editorAsked?(
    document: vscode.TextDocument,
    position: vscode.Position,
    selectedItem: vscode.SelectedCompletionInfo | undefined,
  ): void;
  /**
   * An answer already at hand for a request at `position` of `document`, to give without asking
   * the server: a growing suggestion's grown text, fetched for the editor's ask there.
   */
  answerAtHand?(
    document: vscode.TextDocument,
    position: vscode.Position,
    selectedItem: vscode.SelectedCompletionInfo | undefined,
  ): vscode.InlineCompletionItem[] | vscode.InlineCompletionList | undefined;
  /**
   * An answer with the suggestion `text` at `position` of `document` goes to the editor (it may
   * keep growing there, suggestionGrowth.ts); `selectedItem`: it extends that item, selected in
   * VS Code's open suggest widget.
   */
  suggestionShown?(
    document: vscode.TextDocument,
    position: vscode.Position,
    text: string,
    selectedItem: vscode.SelectedCompletionInfo | undefined,
  ): void;
  now?: () => number;
}

/**
 * `vscode.InlineCompletionTriggerKind.Invoke`: the user asked, by command or key. The enum lives
 * in the `vscode` module, which this plain module does not load.
 */
const INVOKED = 0;

/**
 * When VS Code gives up on an automatic request, from its call to the provider: it calls 50 ms
 * after the keystroke and stops waiting 760 ms after it (quickSuggestionsDelay 10 ms + 750 ms).
 */
const EDITOR_GIVES_UP_MS = 710;
/** An answer later than this may cross VS Code giving up and be dropped unseen. */
const EDITOR_PATIENCE_MS = EDITOR_GIVES_UP_MS - 110;
/**
 * Asking again after such an answer waits until VS Code has surely given up: a request made
 * before would be stopped with the first (harmless if the answer was shown after all).
 */
const ASK_AGAIN_FROM_MS = EDITOR_GIVES_UP_MS + 150;

/** The middleware of one client. */
export interface InlineCompletionMiddleware extends Pick<
  Middleware,
  "provideInlineCompletionItems"
> {
  /**
   * For when the client stops: asks the editor again for no answer that came before, and ends
   * those answers' pending state (the extension's Escape binding would stay on otherwise).
   */
  dispose(): void;
}

/** Builds the `provideInlineCompletionItems` middleware. */
export function inlineCompletionMiddleware(hooks: InlineRequestHooks): InlineCompletionMiddleware {
  const now = hooks.now ?? (() => performance.now());
  /** Asking again for answers already in, each with the end of its pending state. */
  const laterAsks = new Map<ReturnType<typeof setTimeout>, () => void>();
  let disposed = false;
  return {
    dispose: () => {
      disposed = true;
      for (const [timer, endPending] of laterAsks) {
        clearTimeout(timer);
        endPending();
      }
      laterAsks.clear();
    },
    provideInlineCompletionItems: async (document, position, context, token, next) => {
      const called = now();
      const { inlineCompletions, debounceMs } = hooks.currentSettings();
      if (!inlineCompletions) {
        return null;
      }
      const selectedItem = context.selectedCompletionInfo;
      hooks.editorAsked?.(document, position, selectedItem);
      /** The answer as it goes to the editor. */
      const toEditor = (items: Awaited<ReturnType<typeof next>>) => {
        const shown = suggestionText(items);
        if (shown !== undefined) {
          hooks.suggestionShown?.(document, position, shown, selectedItem);
        }
        // Accepted to its end, a suggestion asks again there: the server has the rest by then.
        return withAcceptedCommand(items, document.uri.toString(), position);
      };
      const atHand = hooks.answerAtHand?.(document, position, selectedItem);
      if (atHand !== undefined) {
        return toEditor(atHand);
      }
      // Cancelled by an edit, a cursor move or Escape: no answer is wanted any more.
      const serverRequest = new RequestCancellation();
      const stillWanted = () => !serverRequest.isCancellationRequested;
      const pending = hooks.suggestionPending(document, () => {
        serverRequest.cancel();
      });
      // A late answer and asking again with it keep the suggestion pending after we return.
      let pendingAfterReturn = false;
      try {
        // eslint-disable-next-line @typescript-eslint/no-unsafe-enum-comparison -- see INVOKED
        const automatic = context.triggerKind !== INVOKED;
        const afterAccept = hooks.askedAfterAccept?.(document, position) ?? false;
        // VS Code cancels the token on the next keystroke: a burst of typing sends no request.
        const debounced =
          (!automatic && !afterAccept) || (await waitUnlessCancelled(debounceMs, token));
        if (!debounced || !stillWanted()) {
          return null;
        }
        const version = document.version;
        const place = hooks.watchPlace(document, position, () => {
          serverRequest.cancel();
        });
        const ask = async () => {
          const started = now();
          hooks.requestStarted();
          try {
            return await next(document, position, context, serverRequest.token);
          } finally {
            hooks.requestFinished(now() - started, serverRequest.isCancellationRequested);
          }
        };
        const answer = (async () => {
          try {
            // Asked while the model loads, the request is sent once it has loaded: an answer
            // then comes as a late one does (below), while the place stays as it was.
            const loaded = await hooks.untilModelLoaded(serverRequest.token);
            if (!loaded || disposed || !stillWanted()) {
              return null;
            }
            // Asked once the model is there: it may have come without weights.
            if (!automatic && hooks.cannotSuggest()) {
              return null;
            }
            return await ask();
          } finally {
            place.dispose();
          }
        })();
        // Asked again only once: the new request is the user's (`Invoke`), answered at once.
        const askAgainIfStillWanted = (late: Awaited<typeof answer>) => {
          pending.dispose();
          if (
            !disposed &&
            automatic &&
            stillWanted() &&
            hasSuggestion(late) &&
            document.version === version
          ) {
            hooks.askAgain(document, position);
          }
        };
        const editorGaveUp = whenCancelled(token);
        let outcome: { items: Awaited<typeof answer> } | "cancelled";
        try {
          outcome = await Promise.race([answer.then((items) => ({ items })), editorGaveUp.promise]);
        } finally {
          editorGaveUp.dispose();
        }
        if (outcome === "cancelled") {
          pendingAfterReturn = true;
          void answer.then(askAgainIfStillWanted, () => {
            pending.dispose(); // nobody waits for it; the status bar has seen it end
          });
          return null;
        }
        const answeredAfter = now() - called;
        if (answeredAfter >= EDITOR_PATIENCE_MS) {
          pendingAfterReturn = true;
          const items = outcome.items;
          const timer = setTimeout(
            () => {
              laterAsks.delete(timer);
              askAgainIfStillWanted(items);
            },
            Math.max(0, ASK_AGAIN_FROM_MS - answeredAfter),
          );
          laterAsks.set(timer, () => {
            pending.dispose();
          });
        }
        if (!stillWanted()) {
          return null;
        }
        return toEditor(outcome.items);
      } finally {
        if (!pendingAfterReturn) {
          pending.dispose();
        }
      }
    },
  };
}

/** The text of the answer's first suggestion; undefined when it has none. */
function suggestionText(
  result: vscode.InlineCompletionItem[] | vscode.InlineCompletionList | null | undefined,
): string | undefined {
  const text = answerItems(result)[0]?.insertText;
  return typeof text === "string" && text !== "" ? text : undefined;
}

function hasSuggestion(
  result: vscode.InlineCompletionItem[] | vscode.InlineCompletionList | null | undefined,
): boolean {
  return answerItems(result).some((item) => item.insertText !== "");
}
