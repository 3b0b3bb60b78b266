import type { InlineRequestHooks } from "../../src/inlineCompletionMiddleware";

/**
 * Hooks of an inline completion middleware whose model is loaded and whose editor neither
 * moves nor is watched: a test gives the hooks it looks at.
 */
export function quietHooks(
  hooks: Pick<InlineRequestHooks, "currentSettings" | "suggestionPending"> &
    Partial<InlineRequestHooks>,
): InlineRequestHooks {
  return {
    cannotSuggest: () => false,
    untilModelLoaded: () => Promise.resolve(true),
    requestStarted: () => undefined,
    requestFinished: () => undefined,
    watchPlace: () => ({ dispose: () => undefined }),
    askAgain: () => undefined,
    ...hooks,
  };
}
