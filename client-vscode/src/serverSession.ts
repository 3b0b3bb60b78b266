/**
 * The language server's lifecycle: find Python, check that phi3_lsp is installed there, start
 * the client, restart it a limited number of times, and stop it. One operation at a time.
 */

import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import * as vscode from "vscode";
import {
  CloseAction,
  type DynamicFeature,
  ErrorAction,
  ExecuteCommandRequest,
  LanguageClient,
  type LanguageClientOptions,
  type ServerOptions,
  State,
  type StaticFeature,
} from "vscode-languageclient/node";
import { inlineCompletionMiddleware } from "./inlineCompletionMiddleware";
import { isServerStatus, STATUS_NOTIFICATION } from "./protocol";
import { activePythonInterpreter } from "./pythonEnvironment";
import { checkServerInstalled, chooseInterpreter, installAdvice } from "./pythonInterpreter";
import { RestartBudget } from "./restartBudget";
import { stderrLineLevel } from "./serverLog";
import {
  type ExtensionSettings,
  initializationOptions,
  SETTINGS_SECTION,
  serverArguments,
} from "./settings";
import type { StatusBar } from "./statusBar";

/**
 * The extension contributes the `phi3.*` palette commands itself and sends
 * workspace/executeCommand directly. The generic execute-command feature would register the
 * server's command ids (the same names) as VS Code commands a second time and fail the start.
 */
class Phi3LanguageClient extends LanguageClient {
  override registerFeature(feature: StaticFeature | DynamicFeature<unknown>): void {
    if (
      "registrationType" in feature &&
      feature.registrationType.method === ExecuteCommandRequest.method
    ) {
      return;
    }
    super.registerFeature(feature);
  }
}

export interface SessionDependencies {
  readonly output: vscode.LogOutputChannel;
  readonly statusBar: StatusBar;
  readonly settings: () => ExtensionSettings;
}

/** Calls `onLine` for each line of `input`, as the library's default stdio handling does. */
function forEachLine(input: Readable, onLine: (line: string) => void): void {
  createInterface({ input, crlfDelay: Infinity, terminal: false, historySize: 0 }).on(
    "line",
    onLine,
  );
}

const RESTARTS_ALLOWED = 3;
const RESTART_WINDOW_MS = 3 * 60_000;

export class ServerSession implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private queue: Promise<void> = Promise.resolve();
  private readonly crashes = new RestartBudget(RESTARTS_ALLOWED, RESTART_WINDOW_MS);

  constructor(private readonly deps: SessionDependencies) {}

  start(): Promise<void> {
    return this.enqueue(() => this.startNow());
  }

  /** Stops the running server (if any) and starts a fresh one with a fresh restart budget. */
  restart(): Promise<void> {
    return this.enqueue(async () => {
      this.crashes.reset();
      await this.stopNow();
      await this.startNow();
    });
  }

  stop(): Promise<void> {
    return this.enqueue(() => this.stopNow());
  }

  /** Sends workspace/executeCommand to the running server. */
  async executeCommand(command: string): Promise<unknown> {
    const client = this.client;
    if (!client?.isRunning()) {
      throw new Error('The Phi-3 server is not running. Use "Phi-3: Restart server".');
    }
    return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: [] });
  }

  dispose(): void {
    void this.stop();
  }

  private enqueue(operation: () => Promise<void>): Promise<void> {
    // Operations never overlap, and one failure (logged here) does not block the ones after
    // it; the returned promise never rejects, so callers may fire and forget.
    this.queue = this.queue.then(operation).catch((error: unknown) => {
      this.deps.output.error(`Phi-3 server: ${String(error)}`);
    });
    return this.queue;
  }

  private async startNow(): Promise<void> {
    const { output, statusBar } = this.deps;
    const settings = this.deps.settings();
    statusBar.setConnection({ kind: "starting" });
    const interpreter = chooseInterpreter(
      settings.pythonPath,
      settings.pythonPath === "" ? await activePythonInterpreter(output) : undefined,
    );
    output.info(`Using Python ${interpreter.command} (from ${interpreter.source})`);
    const check = await checkServerInstalled(interpreter.command);
    if (check.kind !== "installed") {
      const advice = installAdvice(check, interpreter);
      output.error(`${advice}\n${check.detail}`);
      statusBar.setConnection({ kind: "failed", reason: advice });
      void this.offerInstallFixes(advice);
      return;
    }
    const client = this.createClient(interpreter.command, settings);
    this.client = client;
    try {
      await client.start();
    } catch (error) {
      output.error(`The Phi-3 server did not start: ${String(error)}`);
      statusBar.setConnection({ kind: "failed", reason: "the server did not start" });
    }
  }

  private async stopNow(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client !== undefined) {
      try {
        await client.dispose();
      } catch (error) {
        this.deps.output.warn(`Stopping the Phi-3 server: ${String(error)}`);
      }
    }
    this.deps.statusBar.setConnection({ kind: "stopped" });
  }

  private createClient(python: string, settings: ExtensionSettings): LanguageClient {
    const { output, statusBar } = this.deps;
    // No `transport`: with TransportKind.stdio the library appends `--stdio` to the arguments,
    // which the server does not take (it speaks stdio by default).
    const serverOptions: ServerOptions = { command: python, args: serverArguments(settings) };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
      outputChannel: output,
      stdioOptions: {
        stdout: (input, channel) => {
          forEachLine(input, (line) => {
            channel.info(line);
          });
        },
        stderr: (input, channel) => {
          forEachLine(input, (line) => {
            channel[stderrLineLevel(line)](line);
          });
        },
      },
      // The server re-reads its settings (workspace/configuration) when this notifies it of a
      // change; it does not register for didChangeConfiguration itself.
      // eslint-disable-next-line @typescript-eslint/no-deprecated
      synchronize: { configurationSection: SETTINGS_SECTION },
      // A function: a restart after a crash sends the settings of that moment.
      initializationOptions: () => initializationOptions(this.deps.settings()),
      errorHandler: {
        error: (_error, _message, count) => ({
          action: count !== undefined && count <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown,
        }),
        closed: () => {
          if (this.crashes.recordCrash()) {
            output.warn("The Phi-3 server stopped unexpectedly; restarting it.");
            return { action: CloseAction.Restart };
          }
          const message = this.crashes.exhaustedMessage();
          statusBar.setConnection({ kind: "failed", reason: "stopped repeatedly" });
          return { action: CloseAction.DoNotRestart, message };
        },
      },
      middleware: inlineCompletionMiddleware({
        currentSettings: () => this.deps.settings(),
        requestStarted: () => {
          statusBar.requestStarted();
        },
        requestFinished: (ms, cancelled) => {
          statusBar.requestFinished(ms, cancelled);
        },
      }),
    };
    const client = new Phi3LanguageClient("phi3", "Phi-3", serverOptions, clientOptions);
    client.onNotification(STATUS_NOTIFICATION, (status: unknown) => {
      if (isServerStatus(status)) {
        statusBar.setServerStatus(status);
      } else {
        output.warn(`Ignoring a malformed ${STATUS_NOTIFICATION}: ${JSON.stringify(status)}`);
      }
    });
    client.onDidChangeState(({ newState }) => {
      if (newState === State.Running) {
        statusBar.setConnection({ kind: "running" });
      } else if (newState === State.Starting) {
        statusBar.setConnection({ kind: "starting" });
      }
    });
    return client;
  }

  private async offerInstallFixes(advice: string): Promise<void> {
    const openSettings = "Set phi3.pythonPath";
    const showOutput = "Show output";
    const retry = "Retry";
    const choice = await vscode.window.showErrorMessage(advice, openSettings, showOutput, retry);
    if (choice === openSettings) {
      await vscode.commands.executeCommand("workbench.action.openSettings", "phi3.pythonPath");
    } else if (choice === showOutput) {
      this.deps.output.show();
    } else if (choice === retry) {
      await this.restart();
    }
  }
}
