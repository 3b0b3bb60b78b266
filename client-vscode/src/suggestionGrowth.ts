/**
 * A suggestion shown while the server still generates it grows in place.
 *
 * The server answers within its time budget (`phi3.answerBudgetMs`) and keeps generating the
 * continuation in the background; asked again at the same place, it answers at once from what
 * it has by then: the first line as it is, whole lines once there are some, the whole text once
 * finished. Unasked, the editor would go on showing the first answer, a few characters with a
 * slow model. So after an answer with a suggestion comes while `phi3/status` says "generating",
 * the editor is asked again at that place every GROW_EVERY_MS while it stays so, and once more
 * when the server is ready again (the whole text).
 *
 * Growing ends when the document is edited or the cursor leaves the place (accepting part of the
 * suggestion moves it), another editor becomes active, the user turns the suggestion down (it is
 * pending meanwhile, so that the extension's Escape binding applies, pendingSuggestions.ts),
 * inline completions are turned off, an answer at another place comes, or the client stops. One
 * suggestion grows at a time, and the answers to its own asks start nothing.
 *
 * Only type imports from `vscode`, so this module runs (and is tested) under plain Node.
 */

import type * as vscode from "vscode";
import type { ServerStatusSource } from "./modelLoad";

/**
 * How often a growing suggestion is asked for again. The server adds whole lines (or, on the
 * first line, tokens: Phi-3 makes ~4 a second on a CPU), and each ask costs it a few
 * milliseconds with no model work: half a second looks like streaming without flooding it.
 */
export const GROW_EVERY_MS = 500;

interface Disposable {
  dispose(): void;
}

export interface GrowthHooks {
  /** The server's status (statusBar.ts). */
  readonly status: ServerStatusSource;
  /** Read on every ask, so turning inline completions off stops growing. */
  inlineCompletions(): boolean;
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
  /** Asks the editor for inline suggestions again, if its cursor is still alone at `position`. */
  askAgain(document: vscode.TextDocument, position: vscode.Position): void;
  /**
   * The suggestion is pending until the returned handle is disposed; `dismiss` is called if the
   * user turns it down first.
   */
  suggestionPending(dismiss: () => void): Disposable;
  /** Calls `tick` every `ms` until disposed; setInterval unless a test drives it. */
  every?(ms: number, tick: () => void): Disposable;
}

interface Place {
  readonly document: vscode.TextDocument;
  readonly version: number;
  readonly line: number;
  readonly character: number;
}

function samePlace(a: Place, b: Place): boolean {
  return (
    a.document === b.document &&
    a.version === b.version &&
    a.line === b.line &&
    a.character === b.character
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

/** The one growing suggestion of a client; disposed with it. */
export class SuggestionGrowth implements Disposable {
  /** The place that grew last: answers there (its asks' own) start nothing. */
  private grownAt: Place | undefined;
  private stopGrowing: (() => void) | undefined;
  private disposed = false;

  constructor(private readonly hooks: GrowthHooks) {}

  /** Whether a suggestion is growing now. */
  get growing(): boolean {
    return this.stopGrowing !== undefined;
  }

  /** An answer with a suggestion at `position` of `document` went to the editor. */
  answered(document: vscode.TextDocument, position: vscode.Position): void {
    const place: Place = {
      document,
      version: document.version,
      line: position.line,
      character: position.character,
    };
    if (this.disposed || (this.grownAt !== undefined && samePlace(this.grownAt, place))) {
      return;
    }
    // Generating, the server will have more to show; an answer at another place replaces this.
    if (this.hooks.status.serverStatus?.state !== "generating" || !this.hooks.inlineCompletions()) {
      return;
    }
    this.stop();
    this.grownAt = place;
    this.grow(document, position);
  }

  dispose(): void {
    this.disposed = true;
    this.stop();
  }

  private stop(): void {
    this.stopGrowing?.();
  }

  private grow(document: vscode.TextDocument, position: vscode.Position): void {
    const { hooks } = this;
    const handles: Disposable[] = [];
    const stop = () => {
      this.stopGrowing = undefined;
      for (const handle of handles.splice(0)) {
        handle.dispose();
      }
    };
    this.stopGrowing = stop;
    const askAgain = () => {
      if (hooks.inlineCompletions()) {
        hooks.askAgain(document, position);
      } else {
        stop();
      }
    };
    const every = (ms: number, tick: () => void) =>
      hooks.every === undefined ? everyWithTimers(ms, tick) : hooks.every(ms, tick);
    handles.push(
      hooks.suggestionPending(stop),
      hooks.watchPlace(document, position, stop),
      hooks.onActiveEditorChanged(stop),
      hooks.status.onServerStatusChanged(() => {
        const state = hooks.status.serverStatus?.state;
        if (state === "generating") {
          return;
        }
        stop();
        // Ready: the whole text is there. Gone, loading or failed: nothing more to show here.
        if (state === "ready") {
          askAgain();
        }
      }),
      every(GROW_EVERY_MS, askAgain),
    );
  }
}
