/**
 * The phi3-lsp additions to LSP (docs/protocol.md): the `phi3/status` notification, the
 * commands, and the shape of their payloads, with runtime checks for what arrives on the wire.
 *
 * Plain module (no VS Code API).
 */

export const STATUS_NOTIFICATION = "phi3/status";
/** Asks the server to read the prompt at a position before a completion there needs it. */
export const READ_AT_CURSOR_REQUEST = "phi3/readAtCursor";
/** Tells the server the user turned down the suggestion in a document: its continuation stops. */
export const DISMISS_SUGGESTION_NOTIFICATION = "phi3/dismissSuggestion";
export const SHOW_ARCHITECTURE_COMMAND = "phi3.showArchitecture";
export const STATUS_COMMAND = "phi3.status";
export const MEASURE_WEIGHT_READS_COMMAND = "phi3.measureWeightReads";

export type ServerState = "loading" | "ready" | "generating" | "error";

/** Payload of `phi3/status`, sent by the server on every change of state. */
export interface ServerStatus {
  readonly state: ServerState;
  readonly model: string;
  readonly message: string | null;
  readonly percentage: number | null;
  readonly weightsLoaded: boolean;
  readonly lastLatencyMs: number | null;
  readonly lastTokensPerSecond: number | null;
  readonly lastTokens: number | null;
  /** Time the last completion spent decoding after its first token, and its passes. */
  readonly lastDecodeMs?: number | null;
  readonly lastDecodePasses?: number | null;
  /** fp32's decode passes check tokens drafted by the model's 4-bit copy (absent: false). */
  readonly int4Drafts?: boolean;
  /** The weight format loading or loaded (absent from older servers, null before a load). */
  readonly weights?: string | null;
}

/** Result of `phi3/readAtCursor` when the server read (or already held) the prompt. */
export interface ReadAtCursorResult {
  readonly promptTokens: number;
  /** Prompt tokens whose keys and values the server now keeps (at most all but the last). */
  readonly cachedTokens: number;
  /** Of those, the ones this request read (0: they were kept already). */
  readonly readTokens: number;
}

/** Result of `phi3.measureWeightReads`: the fastest of `tries` reads of the model's weights. */
export interface WeightReads {
  readonly bytesRead: number;
  readonly seconds: number;
  readonly bytesPerSecond: number;
  readonly tries: number;
}

export interface ArchitectureConfig {
  readonly modelType: string;
  readonly layers: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly attentionHeads: number;
  readonly keyValueHeads: number;
  readonly headDim: number;
  readonly vocabSize: number;
  readonly contextLength: number;
  readonly dtype: string;
  readonly tieWordEmbeddings: boolean;
}

export interface ModuleParameters {
  readonly name: string;
  readonly type: string;
  readonly count: number;
  /** An earlier module that holds the same weights (tied embeddings), counted once in the total. */
  readonly sharedWith?: string | null;
}

/** Result of `phi3.showArchitecture`. */
export interface ArchitectureReport {
  readonly model: string;
  readonly className: string;
  readonly weightsLoaded: boolean;
  /** Built from the config while the weights still download or convert (absent: false). */
  readonly weightsPending?: boolean;
  readonly repr: string;
  readonly config: ArchitectureConfig;
  readonly parameters: {
    readonly total: number;
    readonly byModule: readonly ModuleParameters[];
  };
}

const SERVER_STATES: readonly string[] = ["loading", "ready", "generating", "error"];

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isNumberOrNull(value: unknown): value is number | null {
  return value === null || typeof value === "number";
}

function isStringOrNull(value: unknown): value is string | null {
  return value === null || typeof value === "string";
}

/** True when `value` is a well-formed `phi3/status` payload. */
export function isServerStatus(value: unknown): value is ServerStatus {
  return (
    isRecord(value) &&
    typeof value.state === "string" &&
    SERVER_STATES.includes(value.state) &&
    typeof value.model === "string" &&
    isStringOrNull(value.message) &&
    isNumberOrNull(value.percentage) &&
    typeof value.weightsLoaded === "boolean" &&
    isNumberOrNull(value.lastLatencyMs) &&
    isNumberOrNull(value.lastTokensPerSecond) &&
    isNumberOrNull(value.lastTokens) &&
    (value.weights === undefined || isStringOrNull(value.weights))
  );
}

function isModuleParameters(value: unknown): value is ModuleParameters {
  return (
    isRecord(value) &&
    typeof value.name === "string" &&
    typeof value.type === "string" &&
    typeof value.count === "number" &&
    (value.sharedWith === undefined || isStringOrNull(value.sharedWith))
  );
}

/** True when `value` has the fields the architecture renderer needs. */
export function isArchitectureReport(value: unknown): value is ArchitectureReport {
  if (!isRecord(value) || !isRecord(value.config) || !isRecord(value.parameters)) {
    return false;
  }
  const { byModule } = value.parameters;
  return (
    typeof value.model === "string" &&
    typeof value.className === "string" &&
    typeof value.weightsLoaded === "boolean" &&
    typeof value.repr === "string" &&
    typeof value.parameters.total === "number" &&
    Array.isArray(byModule) &&
    byModule.every(isModuleParameters)
  );
}

/** True when `value` is a `phi3/readAtCursor` result that says what was read. */
export function isReadAtCursorResult(value: unknown): value is ReadAtCursorResult {
  return (
    isRecord(value) &&
    typeof value.promptTokens === "number" &&
    typeof value.cachedTokens === "number" &&
    typeof value.readTokens === "number"
  );
}

/** True when `value` is a `phi3.measureWeightReads` result. */
export function isWeightReads(value: unknown): value is WeightReads {
  return (
    isRecord(value) &&
    typeof value.bytesRead === "number" &&
    typeof value.seconds === "number" &&
    value.seconds > 0 &&
    typeof value.bytesPerSecond === "number" &&
    typeof value.tries === "number"
  );
}
