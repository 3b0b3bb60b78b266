/**
 * How a command waits for the running server's answer. Most answers come within a moment, but
 * a command asked while the model loads is answered once the load has ended (Phi-3-mini:
 * minutes), the architecture once the model's config has been read. So a wait that lasts more
 * than a moment is shown, with a Cancel button that cancels the request: the server answers a
 * cancelled request at once, and the load goes on. A quick answer shows nothing, which would
 * flash by. A server that stops before it answers because of a restart is asked again once the
 * next one runs, also when it did not answer the shutdown in time.
 *
 * Plain module: only type imports from `vscode`.
 */

import type * as vscode from "vscode";
import { RequestCancellation, whenCancelled } from "./cancellation";
import type { ServerStatusSource } from "./modelLoad";
import { type ServerStatus, SHOW_ARCHITECTURE_COMMAND } from "./protocol";
import type { ShowWait } from "./serverWait";

/** How long an answer may take before its wait is shown. */
export const SLOW_ANSWER_MS = 1000;

/** How a command's request to the running server ended. */
export type CommandAnswer<T> =
  | { readonly kind: "answered"; readonly answer: T }
  /** The user cancelled the shown wait; the request was cancelled with it. */
  | { readonly kind: "cancelled" };

/**
 * Sends a request with `ask` and waits for its answer: quietly until `aMomentPassed`, then
 * with `showWait`, whose cancel cancels the request (the token handed to `ask`). A request that
 * fails rejects, as `ask`'s promise does, and so does one still unanswered when `serverStopped`
 * resolves (`StoppedUnanswered`).
 */
export async function awaitAnswer<T>(
  ask: (token: vscode.CancellationToken) => Promise<T>,
  aMomentPassed: Promise<unknown>,
  showWait: ShowWait,
  serverStopped: Promise<void>,
): Promise<CommandAnswer<T>> {
  const request = new RequestCancellation();
  // A shutdown that is not answered in time leaves the connection open (vscode-languageclient
  // disposes it only after one that is), so nothing would ever answer or reject the request.
  const unanswered = serverStopped.then(() => {
    throw new StoppedUnanswered();
  });
  const answer = Promise.race([ask(request.token), unanswered]).then(
    (value) => ({ kind: "answered", answer: value }) as const,
  );
  const quick = await Promise.race([answer, aMomentPassed.then(() => undefined)]);
  if (quick !== undefined) {
    return quick;
  }
  const ended = await showWait(async (cancelButton) => {
    const cancelled = whenCancelled(cancelButton);
    try {
      return await Promise.race([answer, cancelled.promise]);
    } finally {
      cancelled.dispose();
    }
  });
  if (ended !== "cancelled") {
    return ended;
  }
  request.cancel(); // $/cancelRequest: the server answers with an error, which nobody waits for
  answer.catch(() => undefined);
  return { kind: "cancelled" };
}

/**
 * The line under a slow answer's title: why `command` waits, when the server's status says. The
 * architecture is answered from the loading model's config, before its weights, where their
 * format keeps the module tree the config builds (fp32; int4 replaces the linear layers as the
 * weights load); every other answer waits for the whole load.
 */
export function slowAnswerReason(
  status: ServerStatus | undefined,
  command: string,
): string | undefined {
  if (status?.state !== "loading") {
    return undefined;
  }
  if (command === SHOW_ARCHITECTURE_COMMAND && status.weights === "fp32") {
    return `The server answers once the configuration of ${status.model} has been read (before its weights).`;
  }
  return `The server answers once ${status.model} has loaded (the status bar shows how far).`;
}

/**
 * Calls `show` with the line under `command`'s slow answer now, and again whenever the server's
 * status changes it (the load moved to another model or format, or ended), until disposed.
 */
export function followSlowAnswerReason(
  status: ServerStatusSource,
  command: string,
  show: (reason: string) => void,
): { dispose(): void } {
  let shown: string | undefined;
  const update = () => {
    const reason = slowAnswerReason(status.serverStatus, command) ?? "";
    if (reason !== shown) {
      shown = reason;
      show(reason);
    }
  };
  update();
  return status.onServerStatusChanged(update);
}

/**
 * Error codes of a request the server never answered because it stopped: pygls answers what is
 * pending with RequestCancelled when it is asked to shut down, and the connection rejects what
 * is still pending when it closes (a crash) or is disposed, and whatever is sent to a client
 * that no longer runs.
 */
const STOPPED_BEFORE_ANSWERING: ReadonlySet<unknown> = new Set([
  -32800, // RequestCancelled (a request the user cancelled never gets here: awaitAnswer)
  -32097, // PendingResponseRejected
  -32096, // ConnectionInactive
]);

/** A request still unanswered when its server's stop has ended. */
export class StoppedUnanswered extends Error {
  constructor() {
    super("the server was stopped before it answered");
  }
}

/** True if `error` says that the server stopped before it answered. */
export function stoppedBeforeAnswering(error: unknown): boolean {
  return (
    error instanceof StoppedUnanswered ||
    (typeof error === "object" &&
      error !== null &&
      "code" in error &&
      STOPPED_BEFORE_ANSWERING.has(error.code))
  );
}

/**
 * Runs `ask` (which waits for a running server, then asks it); if the server stops before it
 * answers because a restart is under way (the user's, or onto another Python), runs it once
 * more, on the server that follows. A server that stopped otherwise (a crash) is reported
 * plainly: the JSON-RPC wording ("Request with id 4 is canceled") means nothing to the user.
 */
export async function askThroughRestart<T>(
  ask: () => Promise<T>,
  restartUnderWay: () => boolean,
  commandTitle: string,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await ask();
    } catch (error) {
      if (!stoppedBeforeAnswering(error)) {
        throw error;
      }
      if (attempt > 1 || !restartUnderWay()) {
        throw new ServerStoppedAnswering(commandTitle);
      }
    }
  }
}

/** A command whose server stopped before it answered, with no restart to ask again after. */
export class ServerStoppedAnswering extends Error {
  constructor(commandTitle: string) {
    super(
      `the server stopped before it answered "${commandTitle}". Run it again once the status ` +
        "bar shows the server ready.",
    );
  }
}

/** A command whose slow answer the user cancelled. */
export class AnswerCancelled extends Error {
  constructor(commandTitle: string) {
    super(`Phi-3: "${commandTitle}" cancelled.`);
  }
}
