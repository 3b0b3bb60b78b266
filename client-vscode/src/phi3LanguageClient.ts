/**
 * vscode-languageclient's Node client, with the features the extension leaves out left out,
 * and without the error notifications that would repeat what the session has told the user.
 */

import {
  type DynamicFeature,
  LanguageClient,
  type StaticFeature,
} from "vscode-languageclient/node";
import { isFeatureLeftOut } from "./clientFeatures";

/** Leaves out the built-in features the extension replaces or must not offer (clientFeatures.ts). */
export class Phi3LanguageClient extends LanguageClient {
  override registerFeature(feature: StaticFeature | DynamicFeature<unknown>): void {
    if ("registrationType" in feature && isFeatureLeftOut(feature.registrationType.method)) {
      return;
    }
    super.registerFeature(feature);
  }

  /**
   * After a failed start the library calls stop() on a client that never ran, which always
   * fails with "Client is not running" (the Node client still ends the process). That is
   * expected, so it gets one debug line instead of an error with a stack trace.
   */
  override error(message: string, data?: unknown, showNotification?: boolean | "force"): void {
    if (isNotRunningError(data) || this.retired) {
      this.outputChannel.debug(
        `${message}: ${data instanceof Error ? data.message : String(data)}`,
      );
      return;
    }
    // A start that fails is reported by the session, with its cause and the ways to fix it:
    // the library's "couldn't create connection to server" (or, after a crash, "Restarting
    // server failed" once the exit is reported) would say it again without either.
    const saidAlready =
      message.endsWith(CONNECTION_FAILED) ||
      (message === RESTART_FAILED && this.exitWhileStartingReported);
    super.error(message, data, saidAlready ? false : showNotification);
  }

  /**
   * Set when the session stops this client to replace it. What fails in it afterwards is the
   * stop's doing: the library's own settings sync, sent as a setting change restarts the
   * server, fails with "Starting server failed" and a stack trace otherwise shown to the user.
   */
  retired = false;

  /** Set when the session has told the user that this client's server exited while starting. */
  exitWhileStartingReported = false;

  /** Disposed with the client: what its middleware has scheduled must not outlive it. */
  ownMiddleware: { dispose(): void } | undefined;

  override dispose(timeout?: number): Promise<void> {
    this.ownMiddleware?.dispose();
    return super.dispose(timeout);
  }
}

/** The ends of the library's messages for a start that failed (vscode-languageclient 11). */
const CONNECTION_FAILED = "couldn't create connection to server.";
const RESTART_FAILED = "Restarting server failed";

/** True for the library's refusal to stop a client that does not run. */
export function isNotRunningError(error: unknown): error is Error {
  return error instanceof Error && error.message.startsWith("Client is not running");
}
