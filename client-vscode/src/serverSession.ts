/**
 * The language server's lifecycle: find Python, check that phi3_lsp is installed there, start
 * the client (sessionClient.ts), restart it a limited number of times, and stop it. One
 * operation at a time. The palette's commands reach the server through it (serverCommands.ts).
 */

import { homedir } from "node:os";
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  State,
} from "vscode-languageclient/node";
import { commandProgress } from "./commandProgress";
import { readWhereTheCursorRests } from "./cursorReads";
import { isCompletedScheme, needsServerNow } from "./firstStart";
import { isNotRunningError, type Phi3LanguageClient } from "./phi3LanguageClient";
import { activePythonInterpreter } from "./pythonEnvironment";
import { DISMISS_SUGGESTION_NOTIFICATION } from "./protocol";
import {
  chooseInterpreterInTime,
  interpreterAnsweredInTime,
  PythonEnvironmentQuestion,
} from "./pythonExtensionAnswer";
import {
  checkServerInstalled,
  type InstallCheck,
  type Interpreter,
  installAdvice,
  type PathPlaces,
  restrictedFolder,
} from "./pythonInterpreter";
import { RestartBudget } from "./restartBudget";
import {
  type CommandRequest,
  type CommandServer,
  type CommandWaitViews,
  sendServerCommand,
} from "./serverCommands";
import { ServerLifecycle } from "./serverLifecycle";
import { createSessionClient, DOCUMENT_SELECTOR } from "./sessionClient";
import type { SessionDependencies } from "./sessionDependencies";
import { offerStartFixes } from "./startFixes";
import { settlesWithin } from "./timeouts";

function ignore(): void {
  // A promise's outcome that does not matter here.
}

const RESTARTS_ALLOWED = 3;
const RESTART_WINDOW_MS = 3 * 60_000;
/** How long a stop waits for the library's own restart after a crash to finish. */
const RESTART_SETTLE_MS = 15_000;
/** How long a failed start waits for the exit report that may follow its rejection. */
const EXIT_REPORT_GRACE_MS = 2000;

/** The check that keeps Restricted Mode from running an interpreter of the workspace's own. */
function restrictedCheck(interpreter: Interpreter): InstallCheck | undefined {
  if (vscode.workspace.isTrusted) {
    return undefined;
  }
  const folders = (vscode.workspace.workspaceFolders ?? []).map((folder) => folder.uri.fsPath);
  const folder = restrictedFolder(interpreter, folders);
  return folder === undefined ? undefined : { kind: "restricted", detail: folder };
}

export class ServerSession implements vscode.Disposable {
  private client: Phi3LanguageClient | undefined;
  /** The client whose handshake `startNow` awaits, if any. */
  private handshaking: Phi3LanguageClient | undefined;
  /** When to start, restart and stop (serverLifecycle.ts); the how is here. */
  private readonly lifecycle: ServerLifecycle<Interpreter>;
  private readonly crashes = new RestartBudget(RESTARTS_ALLOWED, RESTART_WINDOW_MS);
  /** Asked by every start and check: one still unanswered is not waited for again. */
  private readonly pythonEnvironment: PythonEnvironmentQuestion;
  private readonly cursorReads: vscode.Disposable;
  private readonly commandWaits: CommandWaitViews;

  constructor(private readonly deps: SessionDependencies) {
    this.commandWaits = commandProgress(deps.statusBar);
    this.cursorReads = readWhereTheCursorRests({
      selector: DOCUMENT_SELECTOR,
      client: () => this.client,
      settings: deps.settings,
      output: deps.output,
    });
    this.pythonEnvironment = new PythonEnvironmentQuestion(() =>
      activePythonInterpreter(deps.output),
    );
    this.lifecycle = new ServerLifecycle<Interpreter>({
      chooseInterpreter: (answeredLate) => this.chooseInterpreterNow(answeredLate),
      interpreterIfAnswered: (answeredLate) =>
        interpreterAnsweredInTime(
          this.deps.settings().pythonPath,
          this.pythonEnvironment,
          this.pathPlaces(),
          answeredLate,
        ),
      starting: () => {
        deps.statusBar.setConnection({ kind: "starting" });
      },
      start: (interpreter) => this.startNow(interpreter),
      stop: () => this.stopNow(),
      abandonStart: () => {
        const client = this.client;
        if (this.handshaking !== undefined && this.handshaking === client) {
          this.deps.output.info("Giving up the server's start, which has not finished.");
          this.client = undefined;
          // Its start() then fails, and `startNow` ends. Not awaited, so the status bar is left
          // to the restart or stop that follows in turn: this stop may end after a newer
          // client has started (a handshake just done makes it a real shutdown, up to 2 s).
          void this.disposeClient(client);
        }
      },
      isAlive: () => this.client !== undefined && this.client.state !== State.Stopped,
      isRunning: () => this.client?.isRunning() === true,
      rereadSettings: async () => {
        await this.client?.sendNotification(DidChangeConfigurationNotification.type, {
          settings: null,
        });
      },
      isTrusted: () => vscode.workspace.isTrusted,
      waitForDocument: () => {
        deps.statusBar.setConnection({ kind: "waiting" });
        return vscode.workspace.onDidOpenTextDocument((document) => {
          if (isCompletedScheme(document.uri.scheme)) {
            void this.lifecycle.documentOpened();
          }
        });
      },
      log: deps.output,
    });
  }

  /** Starts now if the window has something to complete in, else once a document opens. */
  startWhenNeeded(): Promise<void> {
    return this.lifecycle.startWhenNeeded(() =>
      needsServerNow(
        vscode.workspace.workspaceFolders?.length ?? 0,
        vscode.workspace.textDocuments.map((document) => document.uri.scheme),
      ),
    );
  }

  /** Stops the running server (if any) and starts a fresh one with a fresh restart budget. */
  restart(): Promise<void> {
    return this.lifecycle.restart();
  }

  /** Restarts if the interpreter chosen now is not the server's (serverLifecycle.ts). */
  restartIfInterpreterChanged(): Promise<void> {
    return this.lifecycle.interpreterMayHaveChanged();
  }

  /** Re-reads the settings, or starts anew, now that the workspace is trusted. */
  workspaceTrusted(): Promise<void> {
    return this.lifecycle.workspaceTrusted();
  }

  stop(): Promise<void> {
    return this.lifecycle.stop();
  }

  /** Asks the server to run `request`, waiting for its start and answer (serverCommands.ts). */
  executeCommand(request: CommandRequest): Promise<unknown> {
    return sendServerCommand(request, {
      lifecycle: this.lifecycle,
      server: () => this.commandServer(),
      views: this.commandWaits,
    });
  }

  /**
   * Tells the server the user turned down the suggestion in the document at `uri` (as the
   * server knows it), so that the continuation it still generates there in the background stops.
   */
  dismissSuggestion(uri: string): void {
    const client = this.client;
    if (client?.isRunning() !== true) {
      return;
    }
    client
      .sendNotification(DISMISS_SUGGESTION_NOTIFICATION, { textDocument: { uri } })
      .catch((error: unknown) => {
        this.deps.output.debug(`${DISMISS_SUGGESTION_NOTIFICATION}: ${String(error)}`);
      });
  }

  dispose(): void {
    this.cursorReads.dispose();
    void this.lifecycle.dispose();
  }

  /** The client the session holds, as a command asks it. */
  private commandServer(): CommandServer | undefined {
    const client = this.client;
    if (client === undefined) {
      return undefined;
    }
    return {
      isRunning: () => client.isRunning(),
      executeCommand: (params, token) =>
        client.sendRequest(ExecuteCommandRequest.type, params, token),
    };
  }

  private chooseInterpreterNow(
    answeredLate: (interpreter: Interpreter) => void,
  ): Promise<Interpreter> {
    return chooseInterpreterInTime(
      this.deps.settings().pythonPath,
      this.pythonEnvironment,
      this.pathPlaces(),
      this.deps.output,
      answeredLate,
    );
  }

  private pathPlaces(): PathPlaces {
    return { home: homedir(), workspaceFolder: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath };
  }

  /** Starts on `interpreter`, with a fresh restart budget. */
  private async startNow(interpreter: Interpreter): Promise<void> {
    if (this.client !== undefined) {
      await this.stopNow(); // never two servers: the first would run on, unseen
    }
    this.crashes.reset();
    const { output, statusBar } = this.deps;
    const settings = this.deps.settings();
    output.info(`Using Python ${interpreter.command} (from ${interpreter.source})`);
    const check = restrictedCheck(interpreter) ?? (await checkServerInstalled(interpreter.command));
    if (check.kind !== "installed") {
      const advice = installAdvice(check, interpreter);
      output.error(`${advice}\n${check.detail}`);
      statusBar.setConnection({ kind: "failed", reason: advice });
      void this.offerFixes(advice, check.kind === "restricted");
      return;
    }
    const { client, exitedWhileStarting } = createSessionClient(interpreter.command, settings, {
      deps: this.deps,
      holds: (client) => this.client === client,
      crashes: this.crashes,
      offerStartFixes: (advice) => void this.offerFixes(advice, false),
    });
    this.client = client;
    this.handshaking = client;
    try {
      await client.start();
    } catch (error) {
      if (this.client !== client) {
        return; // given up (a restart, a stop): nothing failed that the user must hear of
      }
      // A process that exits is reported by the error handler's `closed`, which may run a
      // moment after this rejection; only a start that failed otherwise is reported here.
      if (await settlesWithin(exitedWhileStarting, EXIT_REPORT_GRACE_MS)) {
        return;
      }
      const reason = error instanceof Error ? error.message : String(error);
      const advice = `Phi-3: the server did not start: ${reason}`;
      output.error(advice);
      statusBar.setConnection({ kind: "failed", reason: "the server did not start" });
      void this.offerFixes(advice, false);
    } finally {
      this.handshaking = undefined;
    }
  }

  private async stopNow(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client !== undefined) {
      await this.disposeClient(client);
    }
    this.deps.statusBar.setConnection({ kind: "stopped" });
  }

  /** Stops `client`, which the session no longer holds; its process ends with it. */
  private async disposeClient(client: Phi3LanguageClient): Promise<void> {
    client.retired = true;
    // A handshake of our own start is not waited for: it may never end, and disposing the
    // client ends its process (the library does so 2 s after a stop it cannot make).
    if (client.state === State.Starting && client !== this.handshaking) {
      // The library is starting it again after a crash. Disposing it now would fail ("not
      // running") and leave that start to fail with two error notifications of its own.
      const restarting = client.start();
      if (!(await settlesWithin(restarting.then(ignore, ignore), RESTART_SETTLE_MS))) {
        // Still starting: stop it once it has (else its server would run on, unseen).
        void restarting.then(() => client.dispose(), ignore);
      }
    }
    try {
      await client.dispose();
    } catch (error) {
      // A client whose start failed has nothing left to stop (its process is gone).
      if (!isNotRunningError(error)) {
        this.deps.output.warn(`Stopping the Phi-3 server: ${String(error)}`);
      }
    }
  }

  private offerFixes(advice: string, restricted: boolean): Promise<void> {
    return offerStartFixes(advice, {
      restricted,
      output: this.deps.output,
      retry: () => this.restart(),
    });
  }
}
