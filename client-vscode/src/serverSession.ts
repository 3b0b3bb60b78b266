/**
 * The language server's lifecycle: find Python, check that phi3_lsp is installed there, start
 * the client, restart it a limited number of times, and stop it. One operation at a time.
 */

import { homedir } from "node:os";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import * as vscode from "vscode";
import {
  CloseAction,
  DidChangeConfigurationNotification,
  type DynamicFeature,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  type LanguageClientOptions,
  type ServerOptions,
  State,
  type StaticFeature,
} from "vscode-languageclient/node";
import { isFeatureLeftOut } from "./clientFeatures";
import {
  AnswerCancelled,
  askThroughRestart,
  awaitAnswer,
  SLOW_ANSWER_MS,
  slowAnswerReason,
} from "./commandAnswer";
import { readWhereTheCursorRests } from "./cursorReads";
import { COMPLETED_SCHEMES, isCompletedScheme, needsServerNow } from "./firstStart";
import { inlineCompletionMiddleware } from "./inlineCompletionMiddleware";
import { modelLoaded } from "./modelLoad";
import { explainNoSuggestions, loadedWithoutWeights } from "./noWeights";
import type { PendingSuggestions } from "./pendingSuggestions";
import { isServerStatus, STATUS_NOTIFICATION } from "./protocol";
import { activePythonInterpreter } from "./pythonEnvironment";
import {
  checkServerInstalled,
  chooseInterpreter,
  type InstallCheck,
  type Interpreter,
  installAdvice,
  restrictedFolder,
} from "./pythonInterpreter";
import { decideAfterClose, RestartBudget } from "./restartBudget";
import { ServerLifecycle } from "./serverLifecycle";
import { stderrLineLevel } from "./serverLog";
import { waitForServer, WAITING_TITLE, WaitCancelled, waitingFor } from "./serverWait";
import {
  type ExtensionSettings,
  initializationOptions,
  SETTINGS_SECTION,
  serverArguments,
} from "./settings";
import type { StatusBar } from "./statusBar";

/** Leaves out the built-in features the extension replaces or must not offer (clientFeatures.ts). */
class Phi3LanguageClient extends LanguageClient {
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

function isNotRunningError(error: unknown): error is Error {
  return error instanceof Error && error.message.startsWith("Client is not running");
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function ignore(): void {
  // A promise's outcome that does not matter here.
}

/** Resolves true when `promise` settles within `ms`, else false. */
function settlesWithin(promise: Promise<void>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      resolve(false);
    }, ms);
    void promise.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export interface SessionDependencies {
  readonly output: vscode.LogOutputChannel;
  readonly statusBar: StatusBar;
  readonly settings: () => ExtensionSettings;
  /** Suggestions not shown yet, for Escape to turn down. */
  readonly pendingSuggestions: PendingSuggestions;
}

/**
 * Calls `onLine` for each line of `input`, as the library's default stdio handling does;
 * resolves once the last line has been handled.
 */
function forEachLine(input: Readable, onLine: (line: string) => void): Promise<void> {
  const lines = createInterface({ input, crlfDelay: Infinity, terminal: false, historySize: 0 });
  lines.on("line", onLine);
  return new Promise((resolve) => lines.once("close", resolve));
}

/** How long an exit's report waits for the rest of the server's stderr, which says why. */
const STDERR_GRACE_MS = 1000;

const RESTARTS_ALLOWED = 3;
const RESTART_WINDOW_MS = 3 * 60_000;
/** How long a stop waits for the library's own restart after a crash to finish. */
const RESTART_SETTLE_MS = 15_000;
/** How long a failed start waits for the exit report that may follow its rejection. */
const EXIT_REPORT_GRACE_MS = 2000;
/** What the user is told when the server exits before the handshake, `lastLine` its last words. */
function exitedWhileStartingAdvice(lastLine: string): string {
  const said = lastLine === "" ? ", without a line on stderr" : `: ${lastLine.replace(/\.$/, "")}`;
  return (
    `Phi-3: the server exited while starting${said}. Its lines in the output say more. Fix the ` +
    "cause (a module missing: reinstall phi3_lsp, or set phi3.pythonPath to a Python that has " +
    "it), then Retry."
  );
}

/** A command's server failed to start; the start has told the user why. */
export class StartFailed extends Error {
  constructor() {
    super("The Phi-3 server did not start.");
  }
}

/** The documents the server completes (and reads ahead in). */
const DOCUMENT_SELECTOR = COMPLETED_SCHEMES.map((scheme) => ({ scheme }));

/** The check that keeps Restricted Mode from running an interpreter of the workspace's own. */
function restrictedCheck(interpreter: Interpreter): InstallCheck | undefined {
  if (vscode.workspace.isTrusted) {
    return undefined;
  }
  const folders = (vscode.workspace.workspaceFolders ?? []).map((folder) => folder.uri.fsPath);
  const folder = restrictedFolder(interpreter, folders);
  return folder === undefined ? undefined : { kind: "restricted", detail: folder };
}

/**
 * The settings editor at phi3.pythonPath. A remote window (SSH, WSL, a container, code-server)
 * takes that machine setting from its Remote tab only: the User tab would show no such setting.
 */
async function openPythonPathSetting(): Promise<void> {
  const query = "phi3.pythonPath";
  if (vscode.env.remoteName !== undefined) {
    await vscode.commands.executeCommand("workbench.action.openRemoteSettings", { query });
  } else {
    await vscode.commands.executeCommand("workbench.action.openSettings", query);
  }
}

/** What a command sends the server, and how the user knows it. */
export interface CommandRequest {
  readonly command: string;
  /** The command's title in the palette, named while it waits for the server to start. */
  readonly title: string;
  /**
   * Shown in the status bar while the server works on it, if given, and as the title of a
   * slow answer's notification.
   */
  readonly progress?: string;
}

/** A client and the report of its process exiting before it ever ran. */
interface SessionClient {
  readonly client: Phi3LanguageClient;
  readonly exitedWhileStarting: Promise<void>;
}

export class ServerSession implements vscode.Disposable {
  private client: Phi3LanguageClient | undefined;
  /** The client whose handshake `startNow` awaits, if any. */
  private handshaking: Phi3LanguageClient | undefined;
  /** When to start, restart and stop (serverLifecycle.ts); the how is here. */
  private readonly lifecycle: ServerLifecycle<Interpreter>;
  private readonly crashes = new RestartBudget(RESTARTS_ALLOWED, RESTART_WINDOW_MS);
  private readonly cursorReads: vscode.Disposable;

  constructor(private readonly deps: SessionDependencies) {
    this.cursorReads = readWhereTheCursorRests({
      selector: DOCUMENT_SELECTOR,
      client: () => this.client,
      settings: deps.settings,
      output: deps.output,
    });
    this.lifecycle = new ServerLifecycle<Interpreter>({
      chooseInterpreter: () => this.chooseInterpreterNow(),
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

  /**
   * Sends workspace/executeCommand to the running server, after the start it needs (in a
   * waiting window) or one under way; that wait shows in a notification the user can cancel,
   * and so does a wait for the answer that lasts more than a moment (commandAnswer.ts). A
   * restart that stops the server before it answers has the command asked again after it.
   */
  executeCommand(request: CommandRequest): Promise<unknown> {
    return askThroughRestart(
      () => this.askRunningServer(request),
      () => this.lifecycle.commandMustWait,
      request.title,
    );
  }

  dispose(): void {
    this.cursorReads.dispose();
    void this.lifecycle.dispose();
  }

  /** `executeCommand` once, on the server that runs or the start under way. */
  private async askRunningServer(request: CommandRequest): Promise<unknown> {
    const isRunning = () => this.client?.isRunning() === true;
    const wait = await waitForServer(this.lifecycle, isRunning, (waitUntilEnded) =>
      vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: WAITING_TITLE, cancellable: true },
        (progress, cancel) => {
          progress.report({ message: waitingFor(request.title) });
          return waitUntilEnded(cancel);
        },
      ),
    );
    const client = this.client;
    if (wait === "cancelled") {
      throw new WaitCancelled(request.title);
    }
    if (wait === "startFailed") {
      throw new StartFailed(); // the start has said why, with the ways to fix it
    }
    if (wait === "notRunning" || client === undefined) {
      throw new Error('The Phi-3 server is not running. Use "Phi-3: Restart server".');
    }
    const params = { command: request.command, arguments: [] };
    const title = request.progress ?? `Phi-3: ${request.title}`;
    const reply = awaitAnswer(
      (token) => client.sendRequest(ExecuteCommandRequest.type, params, token),
      delay(SLOW_ANSWER_MS),
      (waitUntilAnswered) =>
        vscode.window.withProgress(
          { location: vscode.ProgressLocation.Notification, title, cancellable: true },
          (progress, cancel) => {
            progress.report({ message: slowAnswerReason(this.deps.statusBar.serverStatus) });
            return waitUntilAnswered(cancel);
          },
        ),
      this.lifecycle.nextStopEnded(),
    );
    const ended =
      request.progress === undefined
        ? await reply
        : await vscode.window.withProgress(
            { location: vscode.ProgressLocation.Window, title: request.progress },
            () => reply,
          );
    if (ended.kind === "cancelled") {
      throw new AnswerCancelled(request.title);
    }
    return ended.answer;
  }

  private async chooseInterpreterNow(): Promise<Interpreter> {
    const { pythonPath } = this.deps.settings();
    return chooseInterpreter(
      pythonPath,
      pythonPath === "" ? await activePythonInterpreter(this.deps.output) : undefined,
      { home: homedir(), workspaceFolder: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath },
    );
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
      void this.offerInstallFixes(advice, check.kind === "restricted");
      return;
    }
    const { client, exitedWhileStarting } = this.createClient(interpreter.command, settings);
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
      void this.offerInstallFixes(advice, false);
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

  private createClient(python: string, settings: ExtensionSettings): SessionClient {
    const { output, statusBar } = this.deps;
    // Whether the current process finished the initialize handshake; a restart resets it.
    let running = false;
    let reportExitWhileStarting = (): void => undefined;
    // The current process's stderr: its last line (an exit's reason), and when it has all come.
    let stderr = { lastLine: "", read: Promise.resolve() };
    const exitedWhileStarting = new Promise<void>((resolve) => {
      reportExitWhileStarting = resolve;
    });
    // No `transport`: with TransportKind.stdio the library appends `--stdio` to the arguments,
    // which the server does not take (it speaks stdio by default).
    const serverOptions: ServerOptions = { command: python, args: serverArguments(settings) };
    const middleware = inlineCompletionMiddleware({
      currentSettings: () => this.deps.settings(),
      cannotSuggest: () => {
        const status = statusBar.serverStatus;
        if (!loadedWithoutWeights(status)) {
          return false;
        }
        explainNoSuggestions(status, output);
        return true;
      },
      untilModelLoaded: (cancel) => modelLoaded(statusBar, cancel),
      requestStarted: () => {
        statusBar.requestStarted();
      },
      requestFinished: (ms, cancelled) => {
        statusBar.requestFinished(ms, cancelled);
      },
      watchPlace,
      askAgain: askForInlineSuggestionsAgain,
      suggestionPending: (dismiss) => this.deps.pendingSuggestions.add(dismiss),
    });
    const clientOptions: LanguageClientOptions = {
      documentSelector: DOCUMENT_SELECTOR,
      outputChannel: output,
      stdioOptions: {
        stdout: (input, channel) => {
          void forEachLine(input, (line) => {
            channel.info(line);
          });
        },
        stderr: (input, channel) => {
          const current = { lastLine: "", read: Promise.resolve() };
          current.read = forEachLine(input, (line) => {
            current.lastLine = line.trim() === "" ? current.lastLine : line.trim();
            channel[stderrLineLevel(line, running)](line);
          });
          stderr = current;
        },
      },
      // The server re-reads its settings (workspace/configuration) when this notifies it of a
      // change; it does not register for didChangeConfiguration itself.
      // eslint-disable-next-line @typescript-eslint/no-deprecated
      synchronize: { configurationSection: SETTINGS_SECTION },
      // A function: a restart after a crash sends the settings of that moment.
      initializationOptions: () => initializationOptions(this.deps.settings()),
      // The start's failure is reported by the session (above), not a second time by the
      // library with a notification of its own.
      initializationFailedHandler: () => false,
      errorHandler: {
        error: (_error, _message, count) => ({
          action: count !== undefined && count <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown,
        }),
        // The one place that reacts to the process going away, during a start or later.
        closed: async () => {
          if (this.client !== client) {
            // A client being replaced: the session has moved on, and the status bar with it.
            return { action: CloseAction.DoNotRestart, handled: true };
          }
          switch (decideAfterClose(running, this.crashes)) {
            case "restart":
              output.warn("The Phi-3 server stopped unexpectedly; restarting it.");
              return { action: CloseAction.Restart };
            case "exitedWhileStarting": {
              // Before waiting: the library's own report of a failed restart comes meanwhile.
              client.exitWhileStartingReported = true;
              statusBar.setConnection({ kind: "failed", reason: "exited while starting" });
              await settlesWithin(stderr.read, STDERR_GRACE_MS);
              reportExitWhileStarting();
              const advice = exitedWhileStartingAdvice(stderr.lastLine);
              if (this.client === client) {
                void this.offerInstallFixes(advice, false); // else the session has moved on
              }
              // `handled`: logged, without the library's generic notification.
              return { action: CloseAction.DoNotRestart, message: advice, handled: true };
            }
            case "exhausted": {
              // The status bar says it until a restart; the notification goes by itself (the
              // library's own, with its "Go to output" button, would stay after a restart).
              statusBar.setConnection({ kind: "failed", reason: this.crashes.exhaustedReason() });
              const message = this.crashes.exhaustedMessage();
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
    client.onNotification(STATUS_NOTIFICATION, (status: unknown) => {
      // A client given up or replaced may still hear from its process for a while: a start
      // given up finishes its handshake if the process answers within the 2 s before the
      // library ends it, and a stop that times out leaves the connection open as long. Its
      // statuses are not those of the server the status bar shows.
      if (this.client !== client) {
        return;
      }
      if (isServerStatus(status)) {
        statusBar.setServerStatus(status);
      } else {
        output.warn(`Ignoring a malformed ${STATUS_NOTIFICATION}: ${JSON.stringify(status)}`);
      }
    });
    client.onDidChangeState(({ newState }) => {
      running = newState === State.Running;
      if (this.client !== client) {
        return;
      }
      if (newState === State.Running) {
        statusBar.setConnection({ kind: "running" });
      } else if (newState === State.Starting) {
        statusBar.setConnection({ kind: "starting" });
      }
    });
    return { client, exitedWhileStarting };
  }

  private async offerInstallFixes(advice: string, restricted: boolean): Promise<void> {
    const manageTrust = "Manage Workspace Trust";
    const openSettings = "Set phi3.pythonPath";
    const showOutput = "Show output";
    const retry = "Retry";
    const choices = restricted
      ? [manageTrust, openSettings, showOutput]
      : [openSettings, showOutput, retry];
    const choice = await vscode.window.showErrorMessage(advice, ...choices);
    if (choice === manageTrust) {
      await vscode.commands.executeCommand("workbench.trust.manage");
    } else if (choice === openSettings) {
      await openPythonPathSetting();
    } else if (choice === showOutput) {
      this.deps.output.show();
    } else if (choice === retry) {
      await this.restart();
    }
  }
}

/** Calls `listener` when `document` is edited or no cursor of it stays at `position`. */
function watchPlace(
  document: vscode.TextDocument,
  position: vscode.Position,
  listener: () => void,
): vscode.Disposable {
  const edits = vscode.workspace.onDidChangeTextDocument((event) => {
    if (event.document === document && event.contentChanges.length > 0) {
      listener();
    }
  });
  const moves = vscode.window.onDidChangeTextEditorSelection((event) => {
    const stays = event.selections.some(
      (selection) => selection.isEmpty && selection.active.isEqual(position),
    );
    if (event.textEditor.document === document && !stays) {
      listener();
    }
  });
  return vscode.Disposable.from(edits, moves);
}

/** Asks VS Code for inline suggestions at the cursor, if it is still alone at `position`. */
function askForInlineSuggestionsAgain(
  document: vscode.TextDocument,
  position: vscode.Position,
): void {
  const editor = vscode.window.activeTextEditor;
  const cursorThere =
    editor?.document === document &&
    editor.selections.length === 1 &&
    editor.selection.isEmpty &&
    editor.selection.active.isEqual(position);
  if (cursorThere) {
    void vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
  }
}
