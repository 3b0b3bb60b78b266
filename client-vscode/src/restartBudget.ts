/**
 * How many times a crashed server is restarted: a few times, then no more, so that a server
 * that cannot start does not loop (each start of a model server costs seconds of CPU).
 *
 * Plain module (no VS Code API).
 */

export class RestartBudget {
  private crashes: number[] = [];

  /**
   * @param maxRestarts restarts allowed within `windowMs`
   * @param windowMs crashes older than this are forgiven
   * @param now clock, replaceable in tests
   */
  constructor(
    private readonly maxRestarts: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records a crash; true when the server may be restarted once more. */
  recordCrash(): boolean {
    const time = this.now();
    this.crashes = this.crashes.filter((crash) => time - crash < this.windowMs);
    this.crashes.push(time);
    return this.crashes.length <= this.maxRestarts;
  }

  /** Forgets past crashes, e.g. when the user restarts the server by hand. */
  reset(): void {
    this.crashes = [];
  }

  /**
   * What the user is told once the budget is spent, in a notification with no buttons: VS Code
   * keeps an error notification with buttons on screen until it is clicked or closed, and an
   * extension cannot close one, so it would still say the server is down after a restart by
   * hand. Without buttons, VS Code hides it by itself, and shows it on one line: the first
   * words say what happened. The status bar says it until a restart (`exhaustedReason`).
   */
  exhaustedMessage(): string {
    return `Phi-3: the server ${this.exhaustedReason()}`;
  }

  /** The status bar's reason once the budget is spent, shown until the server starts again. */
  exhaustedReason(): string {
    const minutes = Math.round(this.windowMs / 60_000);
    return (
      `stopped ${this.maxRestarts + 1} times within ${minutes} minutes and is not restarted ` +
      'automatically. The output says why; fix that, then run "Phi-3: Restart server".'
    );
  }
}

/** What to do when the server's connection closes without the extension asking for it. */
export type CloseDecision =
  /** It had been running: start it again (within the budget). */
  | "restart"
  /** It exited before the initialize handshake finished: the same start would fail again. */
  | "exitedWhileStarting"
  /** It had been running, but the budget is spent. */
  | "exhausted";

/**
 * Decides on a closed connection. Only a server that was running counts against `budget`; an
 * exit while starting is never retried, so a server that cannot start is reported once.
 */
export function decideAfterClose(wasRunning: boolean, budget: RestartBudget): CloseDecision {
  if (!wasRunning) {
    return "exitedWhileStarting";
  }
  return budget.recordCrash() ? "restart" : "exhausted";
}
