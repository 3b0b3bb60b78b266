/**
 * A real phi3-lsp server process driven over stdio by vscode-languageserver-protocol, the
 * stack vscode-languageclient is built on, announcing the capabilities VS Code announces.
 */

import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from "node:child_process";
import {
  type ClientCapabilities,
  ConfigurationRequest,
  createProtocolConnection,
  type InitializeResult,
  InitializeRequest,
  InitializedNotification,
  LogMessageNotification,
  type ProtocolConnection,
  RegistrationRequest,
  ShowMessageNotification,
  StreamMessageReader,
  StreamMessageWriter,
  UnregistrationRequest,
  WorkDoneProgressCreateRequest,
} from "vscode-languageserver-protocol/node";
import { isServerStatus, type ServerStatus, STATUS_NOTIFICATION } from "../../src/protocol";
import {
  initializationOptions,
  readSettings,
  type ServerSettings,
  serverArguments,
} from "../../src/settings";

/** The interpreter with phi3_lsp installed: `$PHI3_LSP_PYTHON` (set by `make test-vscode`). */
export const PYTHON = process.env.PHI3_LSP_PYTHON ?? "python3";

/**
 * What VS Code 1.9x announces through the extension for the features phi3-lsp serves. No
 * `completion`: the extension leaves classic completion out (src/clientFeatures.ts).
 */
export const VSCODE_LIKE_CAPABILITIES: ClientCapabilities = {
  general: { positionEncodings: ["utf-16"] },
  window: { workDoneProgress: true, showMessage: { messageActionItem: {} } },
  workspace: {
    configuration: true,
    didChangeConfiguration: { dynamicRegistration: true },
    executeCommand: { dynamicRegistration: true },
    workspaceFolders: true,
  },
  textDocument: {
    synchronization: { dynamicRegistration: true, didSave: true, willSave: true },
    hover: { dynamicRegistration: true, contentFormat: ["markdown", "plaintext"] },
    inlineCompletion: { dynamicRegistration: true },
  },
};

/** Where the server runs, and what is added to this process's environment for it. */
interface StartOptions {
  readonly workspaceFolder?: string;
  readonly env?: NodeJS.ProcessEnv;
}

export class LanguageServerProcess {
  readonly connection: ProtocolConnection;
  readonly statuses: ServerStatus[] = [];
  readonly malformedStatuses: unknown[] = [];
  readonly messages: string[] = [];
  /** How many workspace/configuration requests the server has sent (and got answered). */
  configurationPulls = 0;
  private stderr = "";
  private waiters: (() => void)[] = [];
  private exitCode: number | null | undefined;
  private readonly exited: Promise<number | null>;

  private constructor(
    private readonly process: ChildProcessWithoutNullStreams,
    private settings: ServerSettings,
  ) {
    this.exited = new Promise((resolve) => {
      process.on("exit", (code) => {
        this.exitCode = code;
        resolve(code);
        this.wakeWaiters();
      });
    });
    process.stderr.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    this.connection = createProtocolConnection(
      new StreamMessageReader(process.stdout),
      new StreamMessageWriter(process.stdin),
    );
    this.connection.onNotification(STATUS_NOTIFICATION, (status: unknown) => {
      if (isServerStatus(status)) {
        this.statuses.push(status);
      } else {
        this.malformedStatuses.push(status);
      }
      this.wakeWaiters();
    });
    this.connection.onNotification(LogMessageNotification.type, ({ message }) => {
      this.messages.push(`log: ${message}`);
    });
    this.connection.onNotification(ShowMessageNotification.type, ({ message }) => {
      this.messages.push(`show: ${message}`);
    });
    // The pull model, as vscode-languageclient answers it: the `phi3` section of the settings.
    this.connection.onRequest(ConfigurationRequest.type, ({ items }) => {
      this.configurationPulls += 1;
      this.wakeWaiters();
      return items.map((item) => (item.section === "phi3" ? this.settings : null));
    });
    this.connection.onRequest(WorkDoneProgressCreateRequest.type, () => undefined);
    this.connection.onRequest(RegistrationRequest.type, () => undefined);
    this.connection.onRequest(UnregistrationRequest.type, () => undefined);
    this.connection.listen();
  }

  /**
   * Starts the server with the extension's arguments, in `workspaceFolder` (where
   * vscode-languageclient runs it) or else in this process's folder, with `env` added to
   * this process's environment.
   */
  /** `start`, then `use` the server; it is killed afterwards, whatever `use` did. */
  static async with(
    model: string,
    options: StartOptions,
    use: (server: LanguageServerProcess) => Promise<void>,
  ): Promise<void> {
    const server = LanguageServerProcess.start(model, options);
    try {
      await use(server);
    } finally {
      server.kill();
    }
  }

  static start(model: string, { workspaceFolder, env }: StartOptions = {}): LanguageServerProcess {
    const settings = readSettings((key) => (key === "model" ? model : undefined));
    const child = spawn(PYTHON, serverArguments(settings), {
      stdio: ["pipe", "pipe", "pipe"],
      cwd: workspaceFolder,
      env: { ...process.env, ...env },
    });
    return new LanguageServerProcess(child, initializationOptions(settings).phi3);
  }

  async initialize(): Promise<InitializeResult> {
    const result = await this.connection.sendRequest(InitializeRequest.type, {
      processId: process.pid,
      clientInfo: { name: "Visual Studio Code", version: "1.139.1" },
      // Still required by the type (VS Code sends it too), though workspaceFolders supersedes it.
      // eslint-disable-next-line @typescript-eslint/no-deprecated
      rootUri: null,
      workspaceFolders: null,
      capabilities: VSCODE_LIKE_CAPABILITIES,
      initializationOptions: { phi3: this.settings },
    });
    await this.connection.sendNotification(InitializedNotification.type, {});
    return result;
  }

  /**
   * Changes settings the way VS Code does: a push (`{settings: {phi3}}`), after which the server
   * pulls the section again; resolves once that pull has been answered.
   */
  async changeSettings(change: Partial<ServerSettings>, timeoutMs = 10_000): Promise<void> {
    this.settings = { ...this.settings, ...change };
    const pulls = this.configurationPulls;
    await this.connection.sendNotification("workspace/didChangeConfiguration", {
      settings: { phi3: this.settings },
    });
    await this.waitUntil(() => this.configurationPulls > pulls, timeoutMs, "a configuration pull");
  }

  /** Resolves with the first status (from now on or already seen) that satisfies `accept`. */
  async waitForStatus(
    accept: (status: ServerStatus) => boolean,
    timeoutMs: number,
    seenBefore = 0,
  ): Promise<ServerStatus> {
    let found: ServerStatus | undefined;
    await this.waitUntil(
      () => {
        found = this.statuses.slice(seenBefore).find(accept);
        return found !== undefined;
      },
      timeoutMs,
      "a matching phi3/status",
    );
    if (found === undefined) {
      throw new Error("unreachable: waitUntil resolved without a status");
    }
    return found;
  }

  /** Re-checks `done` whenever the server sends something, until it holds or time runs out. */
  private async waitUntil(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (this.exitCode !== undefined) {
        throw new Error(`The server exited (code ${String(this.exitCode)}).\n${this.log()}`);
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new Error(`No ${what} within ${timeoutMs} ms.\n${this.log()}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits for the process to end; kills it if it does not within `timeoutMs`. */
  async exit(timeoutMs: number): Promise<number | null> {
    const timer = setTimeout(() => this.process.kill("SIGKILL"), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
      this.connection.dispose();
    }
  }

  kill(): void {
    if (this.exitCode === undefined) {
      this.process.kill("SIGKILL");
    }
    this.connection.dispose();
  }

  /** Recent server output for failure messages. */
  log(): string {
    return [...this.messages.slice(-20), this.stderr.slice(-4000)].join("\n");
  }

  private wakeWaiters(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) {
      wake();
    }
  }
}

/** The token id of `piece` in the offline model's own tokenizer.json, read independently. */
export function vocabularyId(piece: string): number {
  const script =
    "import json, sys\n" +
    "from phi3_lsp.paths import cache_dir\n" +
    "vocab = json.loads((cache_dir() / 'pack' / 'smollm2-135m' / 'tokenizer.json').read_text())\n" +
    "print(vocab['model']['vocab'][sys.argv[1]])\n";
  return Number(execFileSync(PYTHON, ["-c", script, piece], { encoding: "utf8" }).trim());
}
