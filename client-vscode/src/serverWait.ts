/**
 * How a command that needs the server waits for it. A start takes a second or two, but one may
 * never end (a Python that never answers the handshake), so the wait is shown, the user can
 * cancel it, and it ends with the start or the cancel: never silently, never for good.
 *
 * Plain module (no VS Code API): the session shows the wait as a progress notification.
 */

import { type CancellationSignal, whenCancelled } from "./cancellation";

/** What a command asks of the lifecycle (serverLifecycle.ts). */
export interface AwaitedLifecycle {
  /** A start, or an operation that may start one, is queued or under way, or none has begun. */
  readonly commandMustWait: boolean;
  /** Starts the server if none has begun; resolves true when a start ended meanwhile. */
  serverNeeded(): Promise<boolean>;
}

/** Shows `wait` to the user until it ends, with a way to cancel it that cancels `cancel`. */
export type ShowWait = <T>(wait: (cancel: CancellationSignal) => Promise<T>) => PromiseLike<T>;

/** How a command's wait for the server ended. */
export type ServerWait =
  /** The server runs: ask it. */
  | "running"
  /** A start ended without a server, and has told the user why. */
  | "startFailed"
  /** No server, and no start under way: only a restart brings one. */
  | "notRunning"
  /** The user cancelled the wait; the start goes on. */
  | "cancelled";

/**
 * Waits for the server a command needs: at once when nothing is to be waited for (no wait is
 * shown, which would flash), else with `showWait` until the start ends or the user cancels.
 */
export async function waitForServer(
  lifecycle: AwaitedLifecycle,
  isRunning: () => boolean,
  showWait: ShowWait,
): Promise<ServerWait> {
  if (!lifecycle.commandMustWait) {
    return isRunning() ? "running" : "notRunning";
  }
  // Asked before the wait shows: the start a waiting window needs is queued now, in order.
  let queueDone = lifecycle.serverNeeded();
  const ended = await showWait(async (cancel) => {
    const cancelled = whenCancelled(cancel);
    let startEnded = false;
    try {
      for (;;) {
        const outcome = await Promise.race([queueDone, cancelled.promise]);
        if (outcome === "cancelled") {
          return outcome;
        }
        startEnded ||= outcome;
        // A start that a restart gave up is followed by the restart's own: wait for it too.
        if (isRunning() || !lifecycle.commandMustWait) {
          return { startEnded };
        }
        queueDone = lifecycle.serverNeeded();
      }
    } finally {
      cancelled.dispose();
    }
  });
  if (ended === "cancelled") {
    return "cancelled";
  }
  if (isRunning()) {
    return "running";
  }
  return ended.startEnded ? "startFailed" : "notRunning";
}

/** The progress notification's title while a command waits (VS Code adds ": " and the line). */
export const WAITING_TITLE = "Waiting for the Phi-3 server to start";

/** The line under that title: what runs once the wait ends. */
export function waitingFor(commandTitle: string): string {
  return `"${commandTitle}" runs once it is ready.`;
}

/** A command whose wait for the server the user cancelled: it does not run later. */
export class WaitCancelled extends Error {
  constructor(commandTitle: string) {
    super(
      `Phi-3: "${commandTitle}" cancelled. The server goes on starting; the status bar says ` +
        'when it is ready ("Phi-3: Restart server" starts it anew).',
    );
  }
}
