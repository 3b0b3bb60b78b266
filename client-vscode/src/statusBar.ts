/** The status bar item: keeps the latest client and server state and renders it. */

import * as vscode from "vscode";
import { CompletionFigures } from "./completionFigures";
import type { ServerStatusSource } from "./modelLoad";
import type { ServerStatus } from "./protocol";
import type { ExtensionSettings } from "./settings";
import { type ConnectionState, renderStatus } from "./statusView";

export const SHOW_OUTPUT_COMMAND = "phi3.showOutput";
export const SHOW_MENU_COMMAND = "phi3.showMenu";

export class StatusBar implements vscode.Disposable, ServerStatusSource {
  private readonly item: vscode.StatusBarItem;
  private readonly statusChanges = new vscode.EventEmitter<void>();
  /** Fires whenever `serverStatus` may have changed (a new status, or the server gone). */
  readonly onServerStatusChanged = this.statusChanges.event;
  private connection: ConnectionState = { kind: "starting" };
  private readonly figures = new CompletionFigures();
  private requestsInFlight = 0;

  /** `settings`: read on each render, which a settings change asks for. */
  constructor(private readonly settings: () => Pick<ExtensionSettings, "inlineCompletions">) {
    this.item = vscode.window.createStatusBarItem("phi3.status", vscode.StatusBarAlignment.Right);
    this.item.name = "Phi-3";
    this.render();
    this.item.show();
  }

  setConnection(connection: ConnectionState): void {
    this.connection = connection;
    if (connection.kind !== "running") {
      // A new process reports its own state; the old one's must not linger.
      this.figures.forget();
      this.requestsInFlight = 0;
    }
    this.render();
    this.statusChanges.fire();
  }

  /** The current process's latest `phi3/status`; undefined until its first one. */
  get serverStatus(): ServerStatus | undefined {
    return this.figures.serverStatus;
  }

  setServerStatus(status: ServerStatus): void {
    this.figures.serverStatusArrived(status);
    this.render();
    this.statusChanges.fire();
  }

  requestStarted(): void {
    this.requestsInFlight += 1;
    this.render();
  }

  requestFinished(roundTripMs: number, cancelled: boolean): void {
    this.requestsInFlight = Math.max(0, this.requestsInFlight - 1);
    this.figures.requestFinished(roundTripMs, cancelled);
    this.render();
  }

  /** Re-renders after a settings change (inline completions on/off). */
  render(): void {
    const settings = this.settings();
    const view = renderStatus({
      connection: this.connection,
      server: this.figures.serverStatus,
      requestInFlight: this.requestsInFlight > 0,
      inlineCompletions: settings.inlineCompletions,
      lastRoundTripMs: this.figures.roundTripMs,
    });
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.command = view.onClick === "showOutput" ? SHOW_OUTPUT_COMMAND : SHOW_MENU_COMMAND;
    this.item.backgroundColor = view.isError
      ? new vscode.ThemeColor("statusBarItem.errorBackground")
      : undefined;
  }

  dispose(): void {
    this.statusChanges.dispose();
    this.item.dispose();
  }
}
