/**
 * Waiting out a burst of keystrokes before asking the model, abandoned as soon as VS Code cancels.
 *
 * Plain module: the token type is the structural subset of `vscode.CancellationToken` used here.
 */

/** What a cancellation token offers (VS Code's and vscode-jsonrpc's tokens both fit). */
export interface CancellationSignal {
  readonly isCancellationRequested: boolean;
  onCancellationRequested(listener: () => void): { dispose(): void };
}

/**
 * Resolves after `ms` milliseconds with `true`, or as soon as `token` is cancelled with `false`.
 * Never rejects, and leaves no timer or listener behind.
 */
export function waitUnlessCancelled(ms: number, token: CancellationSignal): Promise<boolean> {
  if (token.isCancellationRequested) {
    return Promise.resolve(false);
  }
  if (ms <= 0) {
    return Promise.resolve(true);
  }
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => {
      subscription.dispose();
      resolve(true);
    }, ms);
    const subscription = token.onCancellationRequested(() => {
      clearTimeout(timer);
      // Deferred: a token may call this listener before `subscription` is assigned.
      queueMicrotask(() => {
        subscription.dispose();
      });
      resolve(false);
    });
  });
}
