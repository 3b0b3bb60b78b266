/**
 * A suggestion asked while the model loads waits for the load. The server answers such a
 * request at once with nothing (its first start, a restart after a crash, a new phi3.model), and
 * VS Code does not ask again by itself once the model is there: a suggestion asked for during a
 * restart's few seconds never came.
 *
 * Plain module (no VS Code API).
 */

import { type CancellationSignal, whenCancelled } from "./cancellation";
import type { ServerStatus } from "./protocol";

/** Where the current server's status is kept (statusBar.ts). */
export interface ServerStatusSource {
  /** The current server's latest `phi3/status`; undefined before its first one, or without one. */
  readonly serverStatus: ServerStatus | undefined;
  /** Calls `listener` whenever `serverStatus` may have changed, until disposed. */
  onServerStatusChanged(listener: () => void): { dispose(): void };
}

/**
 * Resolves true once no model is loading (at once if none is), also when the server goes away
 * meanwhile; false if `cancel` comes first.
 */
export async function modelLoaded(
  source: ServerStatusSource,
  cancel: CancellationSignal,
): Promise<boolean> {
  const loading = () => source.serverStatus?.state === "loading";
  if (!loading()) {
    return true;
  }
  const cancelled = whenCancelled(cancel);
  let statusChanges: { dispose(): void } | undefined;
  const loaded = new Promise<true>((resolve) => {
    statusChanges = source.onServerStatusChanged(() => {
      if (!loading()) {
        resolve(true);
      }
    });
  });
  try {
    return (await Promise.race([loaded, cancelled.promise])) === true;
  } finally {
    statusChanges?.dispose();
    cancelled.dispose();
  }
}
