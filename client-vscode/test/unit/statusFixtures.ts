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
