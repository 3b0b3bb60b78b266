/**
 * Suggestions asked for and not shown yet, so that Escape can turn them down before they arrive.
 *
 * VS Code binds Escape to hiding an inline suggestion only while one is visible. A model on a
 * CPU can take seconds; a suggestion the user pressed Escape for in the meantime would still
 * appear when it comes (the extension asks again with a late answer, see
 * inlineCompletionMiddleware.ts). While a suggestion is pending, the extension's own Escape
 * binding dismisses it instead: the server stops, and nothing is shown.
 *
 * Plain module (no VS Code API).
 */

export class PendingSuggestions {
  private readonly dismissals = new Set<() => void>();

  /** `pendingChanged` hears when the first suggestion begins and when the last one ends. */
  constructor(private readonly pendingChanged: (pending: boolean) => void) {}

  get pending(): boolean {
    return this.dismissals.size > 0;
  }

  /**
   * A suggestion is pending until the returned handle is disposed (which may happen more than
   * once); `dismiss` is called if the user turns it down first.
   */
  add(dismiss: () => void): { dispose(): void } {
    // A wrapper of its own: the same callback may be pending twice, and each ends by itself.
    const entry = () => {
      dismiss();
    };
    this.dismissals.add(entry);
    if (this.dismissals.size === 1) {
      this.pendingChanged(true);
    }
    return {
      dispose: () => {
        if (this.dismissals.delete(entry) && this.dismissals.size === 0) {
          this.pendingChanged(false);
        }
      },
    };
  }

  /** Turns down every pending suggestion. */
  dismissAll(): void {
    if (this.dismissals.size === 0) {
      return;
    }
    const dismissals = [...this.dismissals];
    this.dismissals.clear();
    this.pendingChanged(false);
    for (const dismiss of dismissals) {
      dismiss();
    }
  }
}
