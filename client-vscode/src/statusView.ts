/**
 * What the status bar item shows for a server status: text, tooltip, and what a click does.
 *
 * Plain module (no VS Code API).
 */

import type { ServerStatus } from "./protocol";

/** The client's own view of the server process, which the server cannot report itself. */
export type ConnectionState =
  | { readonly kind: "starting" }
  /** An empty window: the server starts with its first document. */
  | { readonly kind: "waiting" }
  | { readonly kind: "running" }
  | { readonly kind: "stopped" }
  | { readonly kind: "failed"; readonly reason: string };

export interface StatusInputs {
  readonly connection: ConnectionState;
  /** Latest `phi3/status`, undefined until the first one arrives. */
  readonly server: ServerStatus | undefined;
  /** A completion request of ours is on its way (debounce elapsed, answer not yet back). */
  readonly requestInFlight: boolean;
  readonly inlineCompletions: boolean;
  /** Round trip of our last completion request as VS Code saw it. */
  readonly lastRoundTripMs: number | undefined;
}

export type ClickAction = "showOutput" | "showMenu";

export interface StatusView {
  readonly text: string;
  readonly tooltip: string;
  readonly onClick: ClickAction;
  readonly isError: boolean;
}

const SPINNER = "$(sync~spin)";
const LOADING = "$(loading~spin)";
const READY = "$(sparkle)";
const DISABLED = "$(circle-slash)";
const WAITING = "$(circle-outline)";
const NO_WEIGHTS = "$(warning)";
const ERROR = "$(error)";

/**
 * How the tooltip names each phi3.weights value (package.json describes them at length); a
 * format this extension does not know (a newer server's) is shown as the server names it.
 */
const WEIGHT_FORMAT_NAMES: ReadonlyMap<string, string> = new Map([
  ["fp32", "fp32 arithmetic"],
  ["int4", "int4 (4-bit linear layers)"],
]);

function lastCompletionLines(server: ServerStatus | undefined, roundTripMs?: number): string[] {
  const lines: string[] = [];
  if (server?.lastLatencyMs != null) {
    const tokens =
      server.lastTokens == null
        ? ""
        : server.lastTokens === 0
          ? ", nothing to add"
          : `, ${server.lastTokens} tokens`;
    lines.push(`Last completion: ${Math.round(server.lastLatencyMs)} ms on the server${tokens}`);
  }
  if (server?.lastTokensPerSecond != null) {
    lines.push(`Decode speed: ${server.lastTokensPerSecond.toFixed(1)} tokens/s`);
  }
  if (roundTripMs !== undefined) {
    // An answer within answerBudgetMs comes before the generation ends: say so, or a 60 ms
    // round trip beside 680 ms on the server reads as a contradiction.
    const early = server?.lastLatencyMs != null && roundTripMs < server.lastLatencyMs;
    const when = early ? " (answered early; the server went on generating)" : "";
    lines.push(`Round trip in the editor: ${Math.round(roundTripMs)} ms${when}`);
  }
  return lines;
}

function withClickHint(lines: string[], action: ClickAction): string {
  const hint = action === "showOutput" ? "Click to show the output" : "Click for Phi-3 commands";
  return [...lines, "", hint].join("\n");
}

/** A view whose click opens the Phi-3 commands: every state but a failure. */
function menuView(text: string, lines: string[]): StatusView {
  return { text, tooltip: withClickHint(lines, "showMenu"), onClick: "showMenu", isError: false };
}

function failedView(reason: string): StatusView {
  // A notification's sentence ("Phi-3: the phi3_lsp package is not installed…") names the
  // product first, which the tooltip's own prefix does already.
  const said = reason.replace(/^Phi-3: /, "");
  return {
    text: `${ERROR} Phi-3`,
    tooltip: withClickHint([`Phi-3 server: ${said}`], "showOutput"),
    onClick: "showOutput",
    isError: true,
  };
}

/** Renders the status bar item for the current state of client and server. */
export function renderStatus(inputs: StatusInputs): StatusView {
  const { connection, server } = inputs;
  if (connection.kind === "failed") {
    return failedView(connection.reason);
  }
  if (connection.kind === "waiting") {
    return menuView(`${WAITING} Phi-3`, ["Phi-3 starts once a file is open in this window"]);
  }
  if (connection.kind === "stopped") {
    return menuView(`${DISABLED} Phi-3`, ["Phi-3 server is stopped"]);
  }
  if (server === undefined) {
    return menuView(`${LOADING} Phi-3`, ["Starting the Phi-3 server…"]);
  }
  if (server.state === "error") {
    return failedView(server.message ?? `cannot load ${server.model}`);
  }
  if (server.state === "loading") {
    const percent = server.percentage != null ? ` ${Math.round(server.percentage)}%` : "";
    const detail = server.message ?? "Loading";
    // "Looking for microsoft/Phi-3-mini-4k-instruct on the hub" names the model already.
    const what = detail.includes(server.model) ? detail : `${detail}: ${server.model}`;
    // The server's own word: a phi3.weights value it refused is not what loads.
    const format =
      server.weights != null
        ? [`Weights: ${WEIGHT_FORMAT_NAMES.get(server.weights) ?? server.weights}`]
        : [];
    return menuView(`${LOADING} Phi-3${percent}`, [`${what}${percent}`, ...format]);
  }
  const generating = server.state === "generating" || inputs.requestInFlight;
  const idleIcon = server.weightsLoaded ? READY : NO_WEIGHTS;
  const icon = generating ? SPINNER : inputs.inlineCompletions ? idleIcon : DISABLED;
  // Without weights there is no ghost text: the server's message says why and what to set.
  const noWeights = `No weights loaded: hovers and architecture only. ${server.message ?? ""}`;
  const lines = [
    generating ? `Generating with ${server.model}` : `Phi-3 ready: ${server.model}`,
    server.weightsLoaded ? "" : noWeights.trim(),
    server.int4Drafts === true ? "Decoding checks 4-bit drafts: the same text in fewer passes" : "",
    inputs.inlineCompletions ? "" : "Inline completions are off",
    ...lastCompletionLines(server, inputs.lastRoundTripMs),
  ].filter((line) => line !== "");
  const name = `${shortModelName(server.model)}${server.weightsLoaded ? "" : " (no weights)"}`;
  return menuView(`${icon} ${name}`, lines);
}

/** `microsoft/Phi-3-mini-4k-instruct` → `Phi-3-mini-4k-instruct`; `/models/x.gguf` → `x.gguf`. */
export function shortModelName(model: string): string {
  const parts = model.split(/[\\/]/).filter((part) => part !== "");
  return parts.at(-1) ?? model;
}
