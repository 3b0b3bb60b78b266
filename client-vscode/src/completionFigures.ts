/**
 * The last completion's figures for the status tooltip: the server's (latency, speed, tokens
 * from `phi3/status`) and the editor's round trip, kept only while both describe one request.
 *
 * Plain module (no VS Code API).
 */

import type { ServerStatus } from "./protocol";

function sameServerFigures(a: ServerStatus | undefined, b: ServerStatus): boolean {
  // b's figures are number | null, never undefined, so a missing `a` never matches.
  return (
    a?.lastLatencyMs === b.lastLatencyMs &&
    a.lastTokensPerSecond === b.lastTokensPerSecond &&
    a.lastTokens === b.lastTokens
  );
}

export class CompletionFigures {
  private server: ServerStatus | undefined;
  private roundTrip: number | undefined;

  /** Latest `phi3/status`, undefined before the first one (or after the process went away). */
  get serverStatus(): ServerStatus | undefined {
    return this.server;
  }

  /** Round trip of the request the server's figures belong to, when the editor timed it. */
  get roundTripMs(): number | undefined {
    return this.roundTrip;
  }

  /**
   * A status with new `last*` figures is about a request that finished on the server after the
   * round trip we hold was measured (a later request, or the rest of an early-answered one), so
   * that round trip no longer matches them.
   */
  serverStatusArrived(status: ServerStatus): void {
    if (status.lastLatencyMs !== null && !sameServerFigures(this.server, status)) {
      this.roundTrip = undefined;
    }
    this.server = status;
  }

  /** Our completion request got its answer; cancelled ones left the server's figures alone. */
  requestFinished(roundTripMs: number, cancelled: boolean): void {
    if (!cancelled) {
      this.roundTrip = roundTripMs;
    }
  }

  /** A new server process reports its own state; nothing of the old one may linger. */
  forget(): void {
    this.server = undefined;
    this.roundTrip = undefined;
  }
}
