/**
 * The server process's stdout and stderr in the output channel, line by line as the library's
 * default stdio handling shows them, but each stderr line at the level serverLog.ts gives it;
 * and the last line of stderr, which says why a server that exited while starting did.
 *
 * Plain module (no VS Code API).
 */

import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { type ChannelLevel, stderrLineLevel } from "./serverLog";
import { settlesWithin } from "./timeouts";

/** The output channel, as far as the server's lines need it. */
export type LineChannel = Record<ChannelLevel, (line: string) => void>;

/** The output of one client's server processes: a restart after a crash brings a new one. */
export class ServerOutput {
  /** The current process's stderr: its last line that is not blank, and when all has come. */
  private stderr = { lastLine: "", read: Promise.resolve() };

  /** `forwarded`: whether the server now sends its own records as window/logMessage too. */
  constructor(private readonly forwarded: () => boolean) {}

  /** For the client's `stdioOptions`, which the library calls for each process it starts. */
  readonly stdioOptions = {
    stdout: (input: Readable, channel: LineChannel): void => {
      void forEachLine(input, (line) => {
        channel.info(line);
      });
    },
    stderr: (input: Readable, channel: LineChannel): void => {
      const current = { lastLine: "", read: Promise.resolve() };
      current.read = forEachLine(input, (line) => {
        current.lastLine = line.trim() === "" ? current.lastLine : line.trim();
        channel[stderrLineLevel(line, this.forwarded())](line);
      });
      this.stderr = current;
    },
  };

  /**
   * The current process's last line on stderr ("" if none), once all of its stderr has come
   * or `graceMs` has passed: an exit is reported before the rest of what it wrote is read.
   */
  async lastStderrLine(graceMs: number): Promise<string> {
    await settlesWithin(this.stderr.read, graceMs);
    return this.stderr.lastLine;
  }
}

/** What the user is told when the server exits before the handshake, `lastLine` its last words. */
export function exitedWhileStartingAdvice(lastLine: string): string {
  const said = lastLine === "" ? ", without a line on stderr" : `: ${lastLine.replace(/\.$/, "")}`;
  return (
    `Phi-3: the server exited while starting${said}. Its lines in the output say more. Fix the ` +
    "cause (a module missing: reinstall phi3_lsp, or set phi3.pythonPath to a Python that has " +
    "it), then Retry."
  );
}

/**
 * Calls `onLine` for each line of `input`, as the library's default stdio handling does;
 * resolves once the last line has been handled.
 */
function forEachLine(input: Readable, onLine: (line: string) => void): Promise<void> {
  const lines = createInterface({ input, crlfDelay: Infinity, terminal: false, historySize: 0 });
  lines.on("line", onLine);
  return new Promise((resolve) => lines.once("close", resolve));
}
