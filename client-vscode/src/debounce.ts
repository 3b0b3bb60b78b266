/**
 * Waiting out a burst of keystrokes before asking the model, abandoned as soon as VS Code cancels.
 *
 * Plain module (no VS Code API).
 */

import { type CancellationSignal, whenCancelled } from "./cancellation";

/**
 * Resolves after `ms` milliseconds with `true`, or as soon as `token` is cancelled with `false`.
 * Never rejects, and leaves no timer or listener behind.
 */
export async function waitUnlessCancelled(ms: number, token: CancellationSignal): Promise<boolean> {
  if (token.isCancellationRequested) {
    return false;
  }
  if (ms <= 0) {
    return true;
  }
  const cancelled = whenCancelled(token);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const elapsed = new Promise<"elapsed">((resolve) => {
    timer = setTimeout(() => {
      resolve("elapsed");
    }, ms);
  });
  try {
    return (await Promise.race([elapsed, cancelled.promise])) === "elapsed";
  } finally {
    clearTimeout(timer);
    cancelled.dispose();
  }
}
