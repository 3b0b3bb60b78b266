/**
 * A subscription whose source may come late, or never: the Python extension's API is there only
 * once that extension has activated. VS Code runs none of this extension's commands before
 * activate() returns, so activation subscribes without waiting.
 *
 * Plain module (no VS Code API).
 */

export interface Subscription {
  dispose(): void;
}

/**
 * Subscribes with `subscribe` without waiting for it. Disposing the result ends the
 * subscription, also one that comes after (the window closed meanwhile); a failure goes to
 * `failed`.
 */
export function subscribeInBackground(
  subscribe: () => Promise<Subscription | undefined>,
  failed: (error: unknown) => void,
): Subscription {
  let disposed = false;
  let subscription: Subscription | undefined;
  subscribe().then(
    (arrived) => {
      if (disposed) {
        arrived?.dispose();
      } else {
        subscription = arrived;
      }
    },
    (error: unknown) => {
      if (!disposed) {
        failed(error);
      }
    },
  );
  return {
    dispose: () => {
      disposed = true;
      subscription?.dispose();
      subscription = undefined;
    },
  };
}
