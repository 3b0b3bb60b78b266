/**
 * A suggestion shown while the server still generates it grows in place.
 *
 * The server answers within its time budget (`phi3.answerBudgetMs`) and keeps generating the
 * continuation in the background; asked again at the same place, it answers at once from what
 * it has by then, without the model: the first line as it is, whole lines once there are some,
 * the whole text once finished. Unasked, the editor would go on showing the first answer, a few
 * characters with a slow model. So after an answer with a suggestion comes while `phi3/status`
 * says "generating", the server is asked again at that place every GROW_EVERY_MS while it stays
 * so, and once more when it is ready again (the whole text); when its answer differs from what
 * the editor shows, the editor is made to show it. One ask at a time, the last one too: it waits
 * for an ask still on its way, so that the editor is made to show answers in the order asked.
 *
 * VS Code does not ask its provider again for a place and a document version it has a
 * suggestion for (the user's trigger keeps the one shown), so the server is asked directly, and
 * the editor only when there is more to show: it has to hide the shown suggestion first, and
 * that is seen, for a few milliseconds; meanwhile the suggestion is refreshing: Tab and
 * Ctrl+Right accept the text that was shown (refreshingSuggestion.ts). The editor's ask that
 * follows is answered with the answer just fetched (`answerToShow`, which the middleware takes),
 * not by the server a second time: the ghost text is gone for less long, and it is the text that
 * was compared with what the editor showed. Only that ask: the editor not made to ask after all
 * (a second cursor), or asking elsewhere first, the answer is dropped, so that no later ask at
 * that place and version (after a change of model, say) gets it.
 *
 * A suggestion answered while VS Code's suggest widget is open extends the widget's selected
 * item (the server continues the text with that item in place): its asks carry that item, as
 * the editor's did; made to show it anew, VS Code 1.139 keeps the widget open and asks over the
 * same item. Tab is the widget's meanwhile, so such a suggestion is not refreshing while hidden.
 * Escape closing the widget may hide the suggestion without VS Code asking again; made to show
 * it grown, VS Code then asks without the item, and gets no suggestion (`editorAsked`).
 *
 * Growing ends when the document is edited or the cursor leaves the place (accepting part of the
 * suggestion moves it), the editor asks there over another item of the suggest widget or without
 * the one the suggestion extends (the selection moved, the widget closed or opened over it),
 * another editor becomes active, the user turns the suggestion down (it is pending meanwhile, so
 * that the extension's Escape binding applies, pendingSuggestions.ts), inline completions are
 * turned off, an answer at another place comes, or the client stops. One suggestion grows at a
 * time, and the answers to its own asks start nothing.
 *
 * Only type imports from `vscode`, so this module runs (and is tested) under plain Node.
 */

import type * as vscode from "vscode";
import { answerItems } from "./answerItems";
import type { ServerStatusSource } from "./modelLoad";
import type { RefreshingSuggestion } from "./refreshingSuggestion";

/**
 * How often the server is asked for a growing suggestion. It adds whole lines (or, on the first
 * line, tokens: Phi-3 makes ~4 a second on a CPU), and each ask costs it a few milliseconds
 * with no model work; but each new text shown blinks (see above): once a second looks like
 * writing without flickering.
 */
export const GROW_EVERY_MS = 1000;

interface Disposable {
  dispose(): void;
}

/** An inline completion answer as the editor takes it from the provider. */
export type EditorAnswer = vscode.InlineCompletionItem[] | vscode.InlineCompletionList;

export interface GrowthHooks {
  /** The server's status (statusBar.ts). */
  readonly status: ServerStatusSource;
  /** Read on every ask, so turning inline completions off stops growing. */
  inlineCompletions(): boolean;
  /**
   * The server's answer at `position` of `document` now, as it would give it to the editor;
   * undefined when the request failed.
   */
  serverAnswer(
    document: vscode.TextDocument,
    position: vscode.Position,
    selectedItem: vscode.SelectedCompletionInfo | undefined,
  ): Promise<EditorAnswer | null | undefined>;
  /**
   * Has the editor show the server's answer at `position` of `document` in place of the one it
   * shows, if its cursor is still alone there and `stillWanted()` when it asks; resolves
   * whether the editor was asked (it asks the provider next).
   */
  showAgain(
    document: vscode.TextDocument,
    position: vscode.Position,
    stillWanted: () => boolean,
  ): Promise<boolean>;
  /**
   * Calls `listener` when `document` is edited or its cursor leaves `position`, until the
   * returned handle is disposed.
   */
  watchPlace(
    document: vscode.TextDocument,
    position: vscode.Position,
    listener: () => void,
  ): Disposable;
  /** Calls `listener` when another editor becomes active, until disposed. */
  onActiveEditorChanged(listener: () => void): Disposable;
  /**
   * The suggestion in `document` is pending until the returned handle is disposed; `dismiss` is
   * called if the user turns it down first (Escape in that document's editor).
   */
  suggestionPending(document: vscode.TextDocument, dismiss: () => void): Disposable;
  /** Told when the editor hides the suggestion to show it grown, and when that is over. */
  readonly refreshing?: RefreshingSuggestion<vscode.TextDocument, vscode.Position>;
  /** Calls `tick` every `ms` until disposed; setInterval unless a test drives it. */
  every?(ms: number, tick: () => void): Disposable;
}

interface Place {
  readonly document: vscode.TextDocument;
  readonly version: number;
  readonly line: number;
  readonly character: number;
  /** The item selected in VS Code's open suggest widget, which the suggestion extends. */
  readonly selectedItem: vscode.SelectedCompletionInfo | undefined;
}

function placeOf(
  document: vscode.TextDocument,
  position: vscode.Position,
  selectedItem: vscode.SelectedCompletionInfo | undefined,
): Place {
  const { line, character } = position;
  return { document, version: document.version, line, character, selectedItem };
}

function samePosition(a: vscode.Position, b: vscode.Position): boolean {
  return a.line === b.line && a.character === b.character;
}

function sameItem(
  a: vscode.SelectedCompletionInfo | undefined,
  b: vscode.SelectedCompletionInfo | undefined,
): boolean {
  if (a === undefined || b === undefined) {
    return a === b;
  }
  return (
    a.text === b.text &&
    samePosition(a.range.start, b.range.start) &&
    samePosition(a.range.end, b.range.end)
  );
}

function samePlace(a: Place, b: Place): boolean {
  return (
    a.document === b.document &&
    a.version === b.version &&
    a.line === b.line &&
    a.character === b.character &&
    sameItem(a.selectedItem, b.selectedItem)
  );
}

/**
 * Whether `asked` is `place` but without the suggest widget's item that `place` was over: the
 * widget has closed there (Escape closes it).
 */
function widgetClosedOver(place: Place, asked: Place): boolean {
  return (
    place.selectedItem !== undefined &&
    asked.selectedItem === undefined &&
    samePlace(place, { ...asked, selectedItem: place.selectedItem })
  );
}

function everyWithTimers(ms: number, tick: () => void): Disposable {
  const timer = setInterval(tick, ms);
  return {
    dispose: () => {
      clearInterval(timer);
    },
  };
}

/** One suggestion growing: what the editor shows of it, and how it ends. */
interface Growth {
  readonly place: Place;
  shown: string;
  /** `refreshed`: after its last ask, whose answer is still to show (and ends refreshing). */
  stop(refreshed?: boolean): void;
}

/** The one growing suggestion of a client; disposed with it. */
export class SuggestionGrowth implements Disposable {
  /** The place that grew last: answers there (its asks' own) start nothing. */
  private grownAt: Place | undefined;
  private current: Growth | undefined;
  /**
   * The answer the editor is being made to show, fetched at `place`, until it asks there; gone
   * when it asks elsewhere first, or is not made to ask after all.
   */
  private toShow: { readonly place: Place; readonly answer: EditorAnswer } | undefined;
  private disposed = false;

  constructor(private readonly hooks: GrowthHooks) {}

  /** Whether a suggestion is growing now. */
  get growing(): boolean {
    return this.current !== undefined;
  }

  /**
   * An answer with the suggestion `text` at `position` of `document` went to the editor;
   * `selectedItem`: it extends that item, selected in VS Code's open suggest widget.
   */
  answered(
    document: vscode.TextDocument,
    position: vscode.Position,
    text: string,
    selectedItem?: vscode.SelectedCompletionInfo,
  ): void {
    const place = placeOf(document, position, selectedItem);
    if (this.current !== undefined && samePlace(this.current.place, place)) {
      this.current.shown = text; // the answer to its own ask
      this.hooks.refreshing?.answered();
      return;
    }
    if (this.disposed || (this.grownAt !== undefined && samePlace(this.grownAt, place))) {
      this.hooks.refreshing?.answered(); // the answer to its last ask, once it has stopped
      return;
    }
    // Generating, the server will have more to show; an answer at another place replaces this.
    if (this.hooks.status.serverStatus?.state !== "generating" || !this.hooks.inlineCompletions()) {
      return;
    }
    this.current?.stop();
    this.grownAt = place;
    this.current = this.grow(document, position, place, text);
  }

  /**
   * The editor asks at `position` of `document`, over `selectedItem` of VS Code's open suggest
   * widget if any. Asked at the growing suggestion's place over another item than the one it
   * extends, or without it, or over one while it extends none, the editor would no longer show
   * that suggestion there (the selection moved, the widget closed or opened over it): it stops
   * growing. An ask elsewhere drops the answer fetched for an ask there.
   *
   * Made to show a suggestion grown over an item, the editor may ask without it: Escape has
   * closed the widget, and VS Code, which hides the suggestion then unless it asks its provider
   * again, asked nothing. That ask gets no suggestion: the server, asked there without the item,
   * would stop generating the text that extends it and make another, which would show unasked.
   */
  editorAsked(
    document: vscode.TextDocument,
    position: vscode.Position,
    selectedItem: vscode.SelectedCompletionInfo | undefined,
  ): void {
    const asked = placeOf(document, position, selectedItem);
    const toShow = this.toShow?.place; // read before a stop drops it
    const growing = this.current?.place;
    if (
      growing !== undefined &&
      !samePlace(growing, asked) &&
      samePlace(growing, { ...asked, selectedItem: growing.selectedItem })
    ) {
      this.current?.stop();
    }
    if (toShow !== undefined && widgetClosedOver(toShow, asked)) {
      this.toShow = { place: asked, answer: [] };
    } else if (toShow !== undefined && !samePlace(toShow, asked)) {
      this.toShow = undefined;
    }
  }

  /**
   * The answer the editor is being made to show at `position` of `document`, for its ask there:
   * what the growth has just fetched from the server, so that the editor's ask needs no second
   * request (and shows the text sooner). Taken once, and only at the place and the document
   * version it was fetched for.
   */
  answerToShow(
    document: vscode.TextDocument,
    position: vscode.Position,
    selectedItem?: vscode.SelectedCompletionInfo,
  ): EditorAnswer | undefined {
    const toShow = this.toShow;
    if (
      toShow === undefined ||
      !samePlace(toShow.place, placeOf(document, position, selectedItem))
    ) {
      return undefined;
    }
    this.toShow = undefined;
    return toShow.answer;
  }

  dispose(): void {
    this.disposed = true;
    this.current?.stop();
  }

  private grow(
    document: vscode.TextDocument,
    position: vscode.Position,
    place: Place,
    shown: string,
  ): Growth {
    const { hooks } = this;
    const handles: Disposable[] = [];
    const growth: Growth = {
      place,
      shown,
      stop: (refreshed = false) => {
        if (this.current === growth) {
          this.current = undefined;
        }
        for (const handle of handles.splice(0)) {
          handle.dispose();
        }
        if (!refreshed) {
          this.toShow = undefined;
          hooks.refreshing?.end();
        }
      },
    };
    const stop = () => {
      growth.stop();
    };
    const live = () => this.current === growth;
    /** The ask on its way, if any: one at a time, so that answers show in the order asked. */
    let asking: Promise<void> | undefined;
    /** Asks the server, and shows its answer if it differs from what the editor shows. */
    const refresh = async () => {
      if (!live()) {
        return; // stopped while the last ask waited for one on its way: the user has moved on
      }
      if (!hooks.inlineCompletions()) {
        growth.stop();
        return;
      }
      const answer = await hooks
        .serverAnswer(document, position, place.selectedItem)
        .catch(() => undefined);
      const text = answerItems(answer)[0]?.insertText;
      const wanted = () => live() && hooks.inlineCompletions();
      if (wanted() && answer && typeof text === "string" && text && text !== growth.shown) {
        // Over the suggest widget, Tab is the widget's, and the text replaces the item's range.
        if (place.selectedItem === undefined) {
          const { version } = place;
          hooks.refreshing?.begin({ document, version, position, text: growth.shown });
        }
        const fetched = { place, answer };
        this.toShow = fetched;
        // Turned down meanwhile (Escape hides it), it must not show again.
        const asked = await hooks.showAgain(document, position, wanted);
        if (!asked && this.toShow === fetched) {
          // Not shown (a second cursor, say): no later ask may take it, at a stale place.
          this.toShow = undefined;
          if (wanted()) {
            hooks.refreshing?.end(); // nothing is to show again: Tab is the editor's
          }
        }
      }
    };
    const tick = () => {
      if (asking !== undefined) {
        return; // a slow answer must not pile asks up
      }
      asking = refresh().finally(() => {
        asking = undefined;
      });
    };
    const ticks = (ms: number, each: () => void) =>
      hooks.every === undefined ? everyWithTimers(ms, each) : hooks.every(ms, each);
    const statusChanges = hooks.status.onServerStatusChanged(() => {
      const state = hooks.status.serverStatus?.state;
      if (state === "generating") {
        return;
      }
      if (state !== "ready") {
        growth.stop(); // gone, loading or failed: nothing more to show here
        return;
      }
      // Ready: the whole text is there; the last ask, after the one on its way (whose older
      // answer would otherwise be shown after it), then the end (unless it stopped first).
      statusChanges.dispose();
      timer.dispose();
      void (asking ?? Promise.resolve()).then(refresh, refresh).finally(() => {
        growth.stop(true);
      });
    });
    const timer = ticks(GROW_EVERY_MS, tick);
    handles.push(
      statusChanges,
      timer,
      hooks.suggestionPending(document, stop),
      hooks.watchPlace(document, position, stop),
      hooks.onActiveEditorChanged(stop),
    );
    return growth;
  }
}
