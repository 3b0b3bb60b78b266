/**
 * The extension's `phi3.*` settings as one typed object, and what the server gets from them.
 *
 * Plain module (no VS Code API) so that it can be unit-tested under Node.
 */

/** The settings the server reads (docs/protocol.md, "Settings"). */
export interface ServerSettings {
  readonly model: string;
  readonly maxNewTokens: number;
  readonly answerBudgetMs: number;
  readonly contextTokens: number;
  readonly threads: number;
  readonly weights: WeightFormat;
  readonly int4Drafts: boolean;
  readonly inlineCompletions: boolean;
  readonly readAtCursor: boolean;
  readonly trustRemoteCode: boolean;
}

/** How the server stores the model's linear layers: fp32, or 4 bits (faster, text can differ). */
export const WEIGHT_FORMATS = ["fp32", "int4"] as const;
export type WeightFormat = (typeof WEIGHT_FORMATS)[number];

/** Everything under `phi3.*`: the server's settings plus those only the extension uses. */
export interface ExtensionSettings extends ServerSettings {
  readonly debounceMs: number;
  /** Empty: let the extension find an interpreter. */
  readonly pythonPath: string;
}

/** Must match the defaults in package.json (a unit test holds them together). */
export const DEFAULT_SETTINGS: ExtensionSettings = {
  model: "microsoft/Phi-3-mini-4k-instruct",
  maxNewTokens: 50,
  answerBudgetMs: 600,
  contextTokens: 1024,
  threads: 0,
  weights: "fp32",
  int4Drafts: true,
  inlineCompletions: true,
  readAtCursor: true,
  trustRemoteCode: false,
  debounceMs: 250,
  pythonPath: "",
};

/** The section name in settings, initializationOptions and workspace/configuration. */
export const SETTINGS_SECTION = "phi3";

/** Reads one key of the `phi3` section; `vscode.WorkspaceConfiguration.get` has this shape. */
export type SettingLookup = (key: string) => unknown;

interface IntegerRange {
  readonly min: number;
  readonly max: number;
}

const INTEGER_RANGES: Readonly<Record<string, IntegerRange>> = {
  maxNewTokens: { min: 1, max: 512 },
  answerBudgetMs: { min: 0, max: 60_000 },
  contextTokens: { min: 16, max: 32768 },
  threads: { min: 0, max: Number.MAX_SAFE_INTEGER },
  debounceMs: { min: 0, max: 5000 },
};

function readInteger(lookup: SettingLookup, key: keyof typeof INTEGER_RANGES): number | undefined {
  const value = lookup(key);
  const range = INTEGER_RANGES[key];
  if (typeof value !== "number" || !Number.isInteger(value) || range === undefined) {
    return undefined;
  }
  return value >= range.min && value <= range.max ? value : undefined;
}

function readString(lookup: SettingLookup, key: string): string | undefined {
  const value = lookup(key);
  return typeof value === "string" ? value.trim() : undefined;
}

function readWeightFormat(lookup: SettingLookup): WeightFormat | undefined {
  const value = lookup("weights");
  return WEIGHT_FORMATS.find((format) => format === value);
}

function readBoolean(lookup: SettingLookup, key: string): boolean | undefined {
  const value = lookup(key);
  return typeof value === "boolean" ? value : undefined;
}

/**
 * Reads the `phi3` section; a missing or invalid value (hand-edited settings.json) falls back to
 * its default so that one bad value never stops the extension.
 */
export function readSettings(lookup: SettingLookup): ExtensionSettings {
  const d = DEFAULT_SETTINGS;
  const model = readString(lookup, "model");
  return {
    model: model !== undefined && model !== "" ? model : d.model,
    maxNewTokens: readInteger(lookup, "maxNewTokens") ?? d.maxNewTokens,
    answerBudgetMs: readInteger(lookup, "answerBudgetMs") ?? d.answerBudgetMs,
    contextTokens: readInteger(lookup, "contextTokens") ?? d.contextTokens,
    threads: readInteger(lookup, "threads") ?? d.threads,
    weights: readWeightFormat(lookup) ?? d.weights,
    int4Drafts: readBoolean(lookup, "int4Drafts") ?? d.int4Drafts,
    inlineCompletions: readBoolean(lookup, "inlineCompletions") ?? d.inlineCompletions,
    readAtCursor: readBoolean(lookup, "readAtCursor") ?? d.readAtCursor,
    trustRemoteCode: readBoolean(lookup, "trustRemoteCode") ?? d.trustRemoteCode,
    debounceMs: readInteger(lookup, "debounceMs") ?? d.debounceMs,
    pythonPath: readString(lookup, "pythonPath") ?? d.pythonPath,
  };
}

/** The keys the server reads; debounceMs, pythonPath and trace.server are the extension's own. */
export function serverSettings(settings: ExtensionSettings): ServerSettings {
  return {
    model: settings.model,
    maxNewTokens: settings.maxNewTokens,
    answerBudgetMs: settings.answerBudgetMs,
    contextTokens: settings.contextTokens,
    threads: settings.threads,
    weights: settings.weights,
    int4Drafts: settings.int4Drafts,
    inlineCompletions: settings.inlineCompletions,
    readAtCursor: settings.readAtCursor,
    trustRemoteCode: settings.trustRemoteCode,
  };
}

/** The `initializationOptions` of the initialize request. */
export function initializationOptions(settings: ExtensionSettings): {
  [SETTINGS_SECTION]: ServerSettings;
} {
  return { [SETTINGS_SECTION]: serverSettings(settings) };
}

/**
 * Arguments after the interpreter: `python -P -m phi3_lsp --model <model>`. The server runs in
 * the workspace folder, and `-P` keeps that folder off the module path: a `queue.py` or
 * `json.py` of the user's would otherwise be imported in place of the standard library's.
 */
export function serverArguments(settings: ExtensionSettings): string[] {
  return ["-P", "-m", "phi3_lsp", "--model", settings.model];
}

/**
 * Settings that choose the interpreter: a change that chooses another one needs a new server
 * process. Every other key reaches the running server through workspace/didChangeConfiguration
 * (a new model is reloaded in place).
 */
export const INTERPRETER_KEYS: readonly string[] = [`${SETTINGS_SECTION}.pythonPath`];

/** Keys Restricted Mode takes from user settings only (package.json, restrictedConfigurations). */
export const RESTRICTED_KEYS: readonly string[] = ["pythonPath", "model", "trustRemoteCode"];
