import type { ServerStatusSource } from "../../src/modelLoad";
import type { ServerStatus } from "../../src/protocol";

/** A `phi3/status` of a server that has loaded `model` and has not completed anything yet. */
export function readyStatus(model: string): ServerStatus {
  return {
    state: "ready",
    model,
    message: null,
    percentage: null,
    weightsLoaded: true,
    lastLatencyMs: null,
    lastTokensPerSecond: null,
    lastTokens: null,
  };
}

/** The status bar's copy of the server's status, which the test changes. */
export function statusSource(status: ServerStatus | undefined) {
  const listeners = new Set<() => void>();
  const source: { serverStatus: ServerStatus | undefined } & ServerStatusSource = {
    serverStatus: status,
    onServerStatusChanged: (listener) => {
      listeners.add(listener);
      return { dispose: () => listeners.delete(listener) };
    },
  };
  const change = (next: ServerStatus | undefined) => {
    source.serverStatus = next;
    for (const listener of [...listeners]) {
      listener();
    }
  };
  return { source, change, listeners };
}
