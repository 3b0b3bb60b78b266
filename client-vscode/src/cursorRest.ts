/**
 * Noticing that the cursor has come to rest, so that the server can read the text before it
 * (`phi3/readAtCursor`) before a suggestion there asks: the first suggestion at a new place
 * otherwise waits for the whole prompt to be read (seconds, a minute on Phi-3-mini).
 *
 * Plain module (no VS Code API).
 */

/** How long the cursor stays put before the server is asked to read: clicking or arrowing
 * through places does not ask at each one, and a user who starts typing at once asks for a
 * suggestion anyway. */
export const CURSOR_REST_MS = 400;

/** Calls `rested(place)` once the cursor has stayed at a place for `restMs`; a move restarts
 * the wait, and a move to no place (a selection, several cursors, another kind of document)
 * ends it. */
export class CursorRest<Place> {
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly rested: (place: Place) => void,
    private readonly restMs: number = CURSOR_REST_MS,
  ) {}

  moved(place: Place | undefined): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (place === undefined) {
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.rested(place);
    }, this.restMs);
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
