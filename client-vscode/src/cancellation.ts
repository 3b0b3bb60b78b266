/**
 * Cancellation tokens: the shape this extension reads, a promise for their cancellation, and a
 * cancellation of our own, apart from VS Code's, for a request to the server that outlives the
 * editor's interest in it (see inlineCompletionMiddleware.ts).
 *
 * Plain module: only type imports from `vscode`.
 */

import type * as vscode from "vscode";

/** What a cancellation token offers (VS Code's and vscode-jsonrpc's tokens both fit). */
export interface CancellationSignal {
  readonly isCancellationRequested: boolean;
  onCancellationRequested(listener: () => void): { dispose(): void };
}

/** A cancellation token that this extension cancels, handed to vscode-languageclient. */
export class RequestCancellation {
  private cancelled = false;
  private readonly listeners = new Set<() => void>();
  readonly token: vscode.CancellationToken;

  constructor() {
    const isCancelled = () => this.cancelled;
    const listeners = this.listeners;
    this.token = {
      get isCancellationRequested() {
        return isCancelled();
      },
      onCancellationRequested: (listener, thisArgs?: unknown) => {
        const call = () => {
          listener.call(thisArgs, undefined);
        };
        listeners.add(call);
        // vscode-languageclient only calls dispose(); VS Code's Disposable class cannot be
        // loaded in this plain module.
        // eslint-disable-next-line @typescript-eslint/no-unsafe-class-instance-assignment
        return {
          dispose: () => {
            listeners.delete(call);
          },
        };
      },
    };
  }

  get isCancellationRequested(): boolean {
    return this.cancelled;
  }

  /** Cancels once; later calls do nothing. */
  cancel(): void {
    if (this.cancelled) {
      return;
    }
    this.cancelled = true;
    for (const listener of [...this.listeners]) {
      listener();
    }
    this.listeners.clear();
  }
}

/**
 * A promise that resolves with "cancelled" once `token` is cancelled; `dispose` drops the
 * listener when the answer came first.
 */
export function whenCancelled(token: CancellationSignal): {
  promise: Promise<"cancelled">;
  dispose(): void;
} {
  let subscription: { dispose(): void } | undefined;
  const promise = new Promise<"cancelled">((resolve) => {
    if (token.isCancellationRequested) {
      resolve("cancelled");
      return;
    }
    subscription = token.onCancellationRequested(() => {
      resolve("cancelled");
    });
  });
  return {
    promise,
    dispose: () => {
      subscription?.dispose();
    },
  };
}
