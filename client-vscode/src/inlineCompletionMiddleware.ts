/**
 * Middleware around vscode-languageclient's built-in inline completion feature: wait out the
 * debounce, skip when suggestions are off, and report start/end for the status bar and timing.
 * The request itself (and $/cancelRequest when VS Code cancels) stays with the library.
 *
 * Only type imports from `vscode`, so this module runs (and is tested) under plain Node.
 */

import type { Middleware } from "vscode-languageclient";
import { waitUnlessCancelled } from "./debounce";

export interface InlineRequestHooks {
  /** Read on every request, so a settings change applies to the next keystroke. */
  currentSettings(): { readonly inlineCompletions: boolean; readonly debounceMs: number };
  requestStarted(): void;
  /** Always called once per started request, also when it fails or is cancelled. */
  requestFinished(roundTripMs: number, cancelled: boolean): void;
  now?: () => number;
}

/** Builds the `provideInlineCompletionItems` middleware. */
export function inlineCompletionMiddleware(
  hooks: InlineRequestHooks,
): Pick<Middleware, "provideInlineCompletionItems"> {
  const now = hooks.now ?? (() => performance.now());
  return {
    provideInlineCompletionItems: async (document, position, context, token, next) => {
      const { inlineCompletions, debounceMs } = hooks.currentSettings();
      if (!inlineCompletions) {
        return null;
      }
      // VS Code cancels the token on the next keystroke: a burst of typing sends no request.
      if (!(await waitUnlessCancelled(debounceMs, token))) {
        return null;
      }
      const started = now();
      hooks.requestStarted();
      try {
        // The same token goes down, so a keystroke during generation sends $/cancelRequest.
        return await next(document, position, context, token);
      } finally {
        hooks.requestFinished(now() - started, token.isCancellationRequested);
      }
    },
  };
}
