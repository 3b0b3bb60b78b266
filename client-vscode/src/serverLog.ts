/**
 * Which output-channel level a line of the server's stderr deserves.
 *
 * The server logs `<date> <time> <LEVEL> <logger>: <message>` to stderr and, once initialized,
 * forwards its own records (logger `phi3_lsp...`, INFO and up) as window/logMessage too, which
 * the output shows at their level: showing both would print those lines twice. An error shows
 * twice all the same: on stderr its traceback follows it. Plain module.
 */

export type ChannelLevel = "debug" | "info" | "warn" | "error";

const RECORD =
  /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+):/;

/**
 * DEBUG and INFO records → debug; WARNING → warn, unless `forwarded` (the server is
 * initialized) and the record is the server's own, which comes as window/logMessage: then
 * debug. ERROR, CRITICAL and anything unformatted (a traceback, a crash before logging starts)
 * → error: an error's record heads the traceback that follows it, which is not forwarded.
 */
export function stderrLineLevel(line: string, forwarded: boolean): ChannelLevel {
  const [, level, logger] = RECORD.exec(line) ?? [];
  if (level === "DEBUG" || level === "INFO") {
    return "debug";
  }
  if (level === "WARNING") {
    return forwarded && logger?.startsWith("phi3_lsp") === true ? "debug" : "warn";
  }
  return "error";
}
