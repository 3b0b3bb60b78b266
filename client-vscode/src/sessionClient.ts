/**
 * The language client of one server: how its process is started and shown in the output, the
 * settings it sends, its middleware, and what happens when its process goes away (a crash is
 * restarted within the budget; an exit while starting is reported with its cause). The session
 * holds one client at a time; once it holds another, this one leaves the status bar alone.
 */

import * as vscode from "vscode";
import {
  CloseAction,
  ErrorAction,
  type LanguageClientOptions,
  type ServerOptions,
  State,
} from "vscode-languageclient/node";
import { clientMiddleware } from "./clientMiddleware";
import { showClientStatus } from "./clientStatus";
import { COMPLETED_SCHEMES } from "./firstStart";
import { Phi3LanguageClient } from "./phi3LanguageClient";
import { decideAfterClose, type RestartBudget } from "./restartBudget";
import { exitedWhileStartingAdvice, ServerOutput } from "./serverOutput";
import type { SessionDependencies } from "./sessionDependencies";
import {
  type ExtensionSettings,
  initializationOptions,
  SETTINGS_SECTION,
  serverArguments,
} from "./settings";

/** The documents the server completes (and reads ahead in). */
export const DOCUMENT_SELECTOR = COMPLETED_SCHEMES.map((scheme) => ({ scheme }));

/** How long an exit's report waits for the rest of the server's stderr, which says why. */
const STDERR_GRACE_MS = 1000;

/** What a client needs of the session that holds it. */
export interface ClientSession {
  readonly deps: SessionDependencies;
  /** True while the session holds `client`: what a replaced client hears is not news. */
  holds(client: Phi3LanguageClient): boolean;
  /** Crashes of a running server, shared by the session's clients until its next start. */
  readonly crashes: RestartBudget;
  /** Tells the user that the server did not start, with `advice` and the ways to fix it. */
  offerStartFixes(advice: string): void;
}

/** A client and the report of its process exiting before it ever ran. */
export interface SessionClient {
  readonly client: Phi3LanguageClient;
  readonly exitedWhileStarting: Promise<void>;
}

/** A client that runs the server with `python`; not started yet. */
export function createSessionClient(
  python: string,
  settings: ExtensionSettings,
  session: ClientSession,
): SessionClient {
  const { output, statusBar } = session.deps;
  // Whether the current process finished the initialize handshake; a restart resets it.
  let running = false;
  let reportExitWhileStarting = (): void => undefined;
  const exitedWhileStarting = new Promise<void>((resolve) => {
    reportExitWhileStarting = resolve;
  });
  const serverOutput = new ServerOutput(() => running);
  // No `transport`: with TransportKind.stdio the library appends `--stdio` to the arguments,
  // which the server does not take (it speaks stdio by default).
  const serverOptions: ServerOptions = { command: python, args: serverArguments(settings) };
  const middleware = clientMiddleware(session.deps, () => client);
  const clientOptions: LanguageClientOptions = {
    documentSelector: DOCUMENT_SELECTOR,
    outputChannel: output,
    stdioOptions: serverOutput.stdioOptions,
    // The server re-reads its settings (workspace/configuration) when this notifies it of a
    // change; it does not register for didChangeConfiguration itself.
    // eslint-disable-next-line @typescript-eslint/no-deprecated
    synchronize: { configurationSection: SETTINGS_SECTION },
    // A function: a restart after a crash sends the settings of that moment.
    initializationOptions: () => initializationOptions(session.deps.settings()),
    // The start's failure is reported by the session, not a second time by the library with
    // a notification of its own.
    initializationFailedHandler: () => false,
    errorHandler: {
      error: (_error, _message, count) => ({
        action: count !== undefined && count <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown,
      }),
      // The one place that reacts to the process going away, during a start or later.
      closed: async () => {
        if (!session.holds(client)) {
          // A client being replaced: the session has moved on, and the status bar with it.
          return { action: CloseAction.DoNotRestart, handled: true };
        }
        switch (decideAfterClose(running, session.crashes)) {
          case "restart":
            output.warn("The Phi-3 server stopped unexpectedly; restarting it.");
            return { action: CloseAction.Restart };
          case "exitedWhileStarting": {
            // Before waiting: the library's own report of a failed restart comes meanwhile.
            client.exitWhileStartingReported = true;
            statusBar.setConnection({ kind: "failed", reason: "exited while starting" });
            const lastLine = await serverOutput.lastStderrLine(STDERR_GRACE_MS);
            reportExitWhileStarting();
            const advice = exitedWhileStartingAdvice(lastLine);
            if (session.holds(client)) {
              session.offerStartFixes(advice); // else the session has moved on
            }
            // `handled`: logged, without the library's generic notification.
            return { action: CloseAction.DoNotRestart, message: advice, handled: true };
          }
          case "exhausted": {
            // The status bar says it until a restart; the notification goes by itself (the
            // library's own, with its "Go to output" button, would stay after a restart).
            statusBar.setConnection({
              kind: "failed",
              reason: session.crashes.exhaustedReason(),
            });
            const message = session.crashes.exhaustedMessage();
            void vscode.window.showErrorMessage(message);
            // `handled`: logged, without the library's notification.
            return { action: CloseAction.DoNotRestart, message, handled: true };
          }
        }
      },
    },
    middleware,
  };
  const client = new Phi3LanguageClient("phi3", "Phi-3", serverOptions, clientOptions);
  client.ownMiddleware = middleware;
  client.onDidChangeState(({ newState }) => {
    running = newState === State.Running;
  });
  showClientStatus(client, () => session.holds(client), statusBar, output);
  return { client, exitedWhileStarting };
}
