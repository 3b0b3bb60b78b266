/**
 * A palette command's request to the server (workspace/executeCommand): it waits for the start
 * it needs (serverWait.ts), then for the answer (commandAnswer.ts), and is asked again after a
 * restart that stops the server before it answers. Each way it can end without an answer is an
 * error of its own, which the extension reports as it deserves.
 *
 * Plain module: only type imports from `vscode`; the session shows the waits
 * (commandProgress.ts).
 */

import type * as vscode from "vscode";
import type { ExecuteCommandParams } from "vscode-languageclient";
import { AnswerCancelled, askThroughRestart, awaitAnswer, SLOW_ANSWER_MS } from "./commandAnswer";
import { type AwaitedLifecycle, type ShowWait, WaitCancelled, waitForServer } from "./serverWait";
import { delay } from "./timeouts";

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

/** A command's server failed to start; the start has told the user why. */
export class StartFailed extends Error {
  constructor() {
    super("The Phi-3 server did not start.");
  }
}

/** The session's server, as a command asks it. */
export interface CommandServer {
  isRunning(): boolean;
  /** Sends workspace/executeCommand; `token` cancels the request. */
  executeCommand(params: ExecuteCommandParams, token: vscode.CancellationToken): Promise<unknown>;
}

/** How a command's waits show (commandProgress.ts). */
export interface CommandWaitViews {
  /** Shows the command's wait for the server's start, with a Cancel button. */
  startWait(commandTitle: string): ShowWait;
  /**
   * Shows a wait for `command`'s answer that lasts more than a moment, under `title`, with a
   * Cancel button.
   */
  slowAnswer(title: string, command: string): ShowWait;
  /** Shows `progress` in the status bar until `reply` settles. */
  working<T>(progress: string, reply: Promise<T>): PromiseLike<T>;
}

export interface CommandDependencies {
  /** When a command waits for a start, and when a stop ends (serverLifecycle.ts). */
  readonly lifecycle: AwaitedLifecycle & { nextStopEnded(): Promise<void> };
  /** The server the session holds now, if any. */
  server(): CommandServer | undefined;
  readonly views: CommandWaitViews;
}

/**
 * Sends workspace/executeCommand to the running server, after the start it needs (in a
 * waiting window) or one under way; that wait shows in a notification the user can cancel,
 * and so does a wait for the answer that lasts more than a moment. A restart that stops the
 * server before it answers has the command asked again after it.
 */
export function sendServerCommand(
  request: CommandRequest,
  deps: CommandDependencies,
): Promise<unknown> {
  return askThroughRestart(
    () => askRunningServer(request, deps),
    () => deps.lifecycle.commandMustWait,
    request.title,
  );
}

/** `sendServerCommand` once, on the server that runs or the start under way. */
async function askRunningServer(
  request: CommandRequest,
  deps: CommandDependencies,
): Promise<unknown> {
  const { lifecycle, views } = deps;
  const isRunning = () => deps.server()?.isRunning() === true;
  const wait = await waitForServer(lifecycle, isRunning, views.startWait(request.title));
  const server = deps.server();
  if (wait === "cancelled") {
    throw new WaitCancelled(request.title);
  }
  if (wait === "startFailed") {
    throw new StartFailed(); // the start has said why, with the ways to fix it
  }
  if (wait === "notRunning" || server === undefined) {
    throw new Error('The Phi-3 server is not running. Use "Phi-3: Restart server".');
  }
  const params = { command: request.command, arguments: [] };
  const reply = awaitAnswer(
    (token) => server.executeCommand(params, token),
    delay(SLOW_ANSWER_MS),
    views.slowAnswer(request.progress ?? `Phi-3: ${request.title}`, request.command),
    lifecycle.nextStopEnded(),
  );
  const ended =
    request.progress === undefined ? await reply : await views.working(request.progress, reply);
  if (ended.kind === "cancelled") {
    throw new AnswerCancelled(request.title);
  }
  return ended.answer;
}
