/**
 * Which output-channel level a line of the server's stderr deserves.
 *
 * The server logs `<date> <time> <LEVEL> <logger>: <message>` to stderr and forwards its INFO
 * records as window/logMessage too; showing both would print every line twice. Plain module.
 */

export type ChannelLevel = "debug" | "info" | "warn" | "error";

const RECORD = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) /;

/**
 * DEBUG and INFO records → debug (they also arrive as window/logMessage); WARNING → warn;
 * ERROR, CRITICAL and anything unformatted (a traceback, a crash before logging starts) → error.
 */
export function stderrLineLevel(line: string): ChannelLevel {
  const level = RECORD.exec(line)?.[1];
  switch (level) {
    case "DEBUG":
    case "INFO":
      return "debug";
    case "WARNING":
      return "warn";
    default:
      return "error";
  }
}
