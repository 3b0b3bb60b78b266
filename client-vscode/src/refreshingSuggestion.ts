/**
 * The suggestion the editor hides for a moment to show it grown (suggestionGrowth.ts).
 *
 * While it is hidden (about 40 ms in VS Code 1.139, rarely over 100 ms: until the provider has
 * answered again), VS Code has no ghost text for Tab or "Accept Next Word" (Ctrl+Right) to
 * accept: Tab inserts an indent, Ctrl+Right moves the cursor, though the user saw the suggestion
 * a moment before. So the extension binds both keys while a suggestion is refreshing and no
 * ghost text shows (its `phi3.suggestionRefreshing` context key, package.json), and accepts the
 * text that was shown as VS Code would have.
 *
 * Refreshing begins before the editor hides the suggestion and ends SHOW_GRACE_MS after the
 * grown text went to the editor (it shows it a few milliseconds later; the keybindings need no
 * ghost text besides), when the growth stops, or after REFRESH_BOUND_MS at the latest.
 *
 * Plain module (no VS Code API).
 */

/** How long after the grown text went to the editor the keys stay bound. */
export const SHOW_GRACE_MS = 250;
/** The longest a suggestion is taken for refreshing, should no grown text come. */
export const REFRESH_BOUND_MS = 1000;

interface Disposable {
  dispose(): void;
}

/** A suggestion as the editor showed it: its document's version, its place and its text. */
export interface ShownSuggestion<Document, Position> {
  readonly document: Document;
  readonly version: number;
  readonly position: Position;
  readonly text: string;
}

function afterWithTimers(ms: number, run: () => void): Disposable {
  const timer = setTimeout(run, ms);
  return {
    dispose: () => {
      clearTimeout(timer);
    },
  };
}

/** The one suggestion refreshing in the editor, if any; one per extension. */
export class RefreshingSuggestion<Document, Position> {
  private shown: ShownSuggestion<Document, Position> | undefined;
  private timer: Disposable | undefined;

  /**
   * `refreshingChanged` hears when refreshing begins and ends; `after` runs a function after
   * `ms` (setTimeout unless a test drives it).
   */
  constructor(
    private readonly refreshingChanged: (refreshing: boolean) => void,
    private readonly after: (ms: number, run: () => void) => Disposable = afterWithTimers,
  ) {}

  get refreshing(): boolean {
    return this.shown !== undefined;
  }

  /** The editor is about to hide `shown` to show it grown. */
  begin(shown: ShownSuggestion<Document, Position>): void {
    const wasRefreshing = this.refreshing;
    this.shown = shown;
    this.endAfter(REFRESH_BOUND_MS);
    if (!wasRefreshing) {
      this.refreshingChanged(true);
    }
  }

  /** The grown text went to the editor, which shows it in a moment. */
  answered(): void {
    if (this.refreshing) {
      this.endAfter(SHOW_GRACE_MS);
    }
  }

  /** Refreshing is over (the growth stopped, or its text shows). */
  end(): void {
    this.timer?.dispose();
    this.timer = undefined;
    if (this.shown !== undefined) {
      this.shown = undefined;
      this.refreshingChanged(false);
    }
  }

  /** The suggestion that was shown before the editor hid it, if it is refreshing; ends that. */
  take(): ShownSuggestion<Document, Position> | undefined {
    const shown = this.shown;
    this.end();
    return shown;
  }

  private endAfter(ms: number): void {
    this.timer?.dispose();
    this.timer = this.after(ms, () => {
      this.end();
    });
  }
}

/**
 * VS Code's default word pattern (languages without their own): numbers with a decimal point,
 * or runs of anything but whitespace and punctuation.
 */
const DEFAULT_WORD = /(-?\d*\.\d\w*)|([^`~!@#$%^&*()\-=+[{\]}\\|;:'",.<>/?\s]+)/;

/**
 * How much of `text` "Accept Next Word" takes, as VS Code 1.139 counts it: up to the end of
 * the first word when the text starts with one, else up to it, but at most through the first
 * run of whitespace.
 */
function nextWordLength(text: string): number {
  const word = DEFAULT_WORD.exec(text);
  let end = word === null ? text.length : word.index === 0 ? word[0].length : word.index;
  const space = /\s+/.exec(text);
  if (space !== null && space.index + space[0].length < end) {
    end = space.index + space[0].length;
  }
  return end;
}

/** The width of `whitespace` on screen, tabs reaching the next multiple of `tabSize`. */
function visibleWidth(whitespace: string, tabSize: number): number {
  let width = 0;
  for (const character of whitespace) {
    width = character === "\t" ? width + tabSize - (width % tabSize) : width + 1;
  }
  return width;
}

/**
 * Whether Tab accepts a suggestion `text` shown after `lineBeforeCursor`: VS Code indents
 * instead when the cursor is in the line's indentation and the suggestion starts with at least
 * a tab's width of it.
 */
function tabAccepts(lineBeforeCursor: string, text: string, tabSize: number): boolean {
  if (lineBeforeCursor.trim() !== "") {
    return true;
  }
  const firstLine = text.split(/\r\n|\r|\n/)[0] ?? "";
  const indentation = /^\s*/.exec(firstLine)?.[0] ?? "";
  // VS Code measures up to the first non-whitespace character, or the last one of a blank line.
  const measured = indentation.length === firstLine.length ? indentation.slice(0, -1) : indentation;
  return visibleWidth(measured, tabSize) < tabSize;
}

/** What a key accepts of a suggestion: Tab all of it, "Accept Next Word" (Ctrl+Right) a word. */
export type AcceptedPart = "all" | "word";

/**
 * The part of the suggestion `text`, shown after `lineBeforeCursor` in an editor whose tabs are
 * `tabSize` wide, that the key for `part` accepts; undefined when it accepts nothing there (Tab
 * indents).
 */
export function acceptedText(
  text: string,
  part: AcceptedPart,
  lineBeforeCursor: string,
  tabSize: number,
): string | undefined {
  if (part === "word") {
    return text.slice(0, nextWordLength(text));
  }
  return tabAccepts(lineBeforeCursor, text, tabSize) ? text : undefined;
}
