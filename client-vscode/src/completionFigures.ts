/**
 * The last completion's figures for the status tooltip: the server's (latency, speed, tokens
 * from `phi3/status`) and the editor's round trip of the request that began that generation.
 *
 * A request answered from a running suggestion (typing through it, or asking again at its
 * place) begins no generation: its round trip of a few milliseconds says nothing about the
 * figures beside it. A request answered early begins a generation whose figures come later.
 * So a round trip is kept with the generation that began while its request ran, and shown once
 * that generation's figures are the ones on show.
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
  /** Generations begun (`phi3/status` turning to "generating"), and when the last began. */
  private generations = 0;
  private lastBeganAt = -Infinity;
  /** The generation whose figures the server's status holds. */
  private figuresOf: number | undefined;
  private roundTrip: { readonly generation: number; readonly ms: number } | undefined;

  /** `now` must be the clock the round trips are measured with. */
  constructor(private readonly now: () => number = () => performance.now()) {}

  /** Latest `phi3/status`, undefined before the first one (or after the process went away). */
  get serverStatus(): ServerStatus | undefined {
    return this.server;
  }

  /** Round trip of the request the server's figures belong to, when the editor timed it. */
  get roundTripMs(): number | undefined {
    const roundTrip = this.roundTrip;
    return roundTrip?.generation === this.figuresOf ? roundTrip?.ms : undefined;
  }

  /**
   * New `last*` figures are those of the last generation begun: the model runs one at a time,
   * and a stopped one reports none.
   */
  serverStatusArrived(status: ServerStatus): void {
    if (status.state === "generating" && this.server?.state !== "generating") {
      this.generations += 1;
      this.lastBeganAt = this.now();
    }
    if (status.lastLatencyMs !== null && !sameServerFigures(this.server, status)) {
      this.figuresOf = this.generations;
    }
    this.server = status;
  }

  /**
   * Our completion request got its answer after `roundTripMs`. A cancelled one left the
   * server's figures alone; one during which no generation began was answered without the model.
   */
  requestFinished(roundTripMs: number, cancelled: boolean): void {
    const began = this.now() - roundTripMs;
    if (!cancelled && this.lastBeganAt >= began) {
      this.roundTrip = { generation: this.generations, ms: roundTripMs };
    }
  }

  /** A new server process reports its own state; nothing of the old one may linger. */
  forget(): void {
    this.server = undefined;
    this.figuresOf = undefined;
    this.roundTrip = undefined;
  }
}
