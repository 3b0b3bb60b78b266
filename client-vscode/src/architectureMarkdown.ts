/**
 * Renders the server's architecture report (`phi3.showArchitecture`) as a markdown document:
 * the module tree exactly as `print(model)` shows it, the configuration, the parameter counts.
 *
 * Plain module (no VS Code API).
 */

import type { ArchitectureConfig, ArchitectureReport } from "./protocol";

/** 3821079552 → "3,821,079,552" (the same in every locale, unlike toLocaleString). */
export function groupDigits(count: number): string {
  const sign = count < 0 ? "-" : "";
  return (
    sign +
    Math.abs(Math.round(count))
      .toString()
      .replace(/\B(?=(\d{3})+(?!\d))/g, ",")
  );
}

/** 3821079552 → "3.82 B", 134515008 → "134.5 M": the way model sizes are usually quoted. */
export function compactCount(count: number): string {
  const units: [number, string][] = [
    [1e9, "B"],
    [1e6, "M"],
    [1e3, "K"],
  ];
  for (const [size, unit] of units) {
    if (Math.abs(count) >= size) {
      const value = count / size;
      const digits = value >= 100 ? 1 : 2;
      return `${value.toFixed(digits)} ${unit}`;
    }
  }
  return String(count);
}

/** A fence longer than any run of backticks inside `text`, so the code block cannot end early. */
function fenceFor(text: string): string {
  const longestRun = Math.max(0, ...(text.match(/`+/g) ?? []).map((run) => run.length));
  return "`".repeat(Math.max(3, longestRun + 1));
}

/** Makes a value safe inside a markdown table cell. */
function cell(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\|/g, "\\|").replace(/\r?\n/g, " ");
}

function table(header: readonly string[], rows: readonly (readonly string[])[], align: string[]) {
  return [
    `| ${header.map(cell).join(" | ")} |`,
    `|${align.join("|")}|`,
    ...rows.map((row) => `| ${row.map(cell).join(" | ")} |`),
  ].join("\n");
}

const CONFIG_ROWS: readonly [keyof ArchitectureConfig, string][] = [
  ["modelType", "Model type"],
  ["layers", "Decoder layers"],
  ["hiddenSize", "Hidden size"],
  ["intermediateSize", "MLP (intermediate) size"],
  ["attentionHeads", "Attention heads"],
  ["keyValueHeads", "Key/value heads"],
  ["headDim", "Head dimension"],
  ["vocabSize", "Vocabulary size"],
  ["contextLength", "Context length"],
  ["dtype", "Weights dtype"],
  ["tieWordEmbeddings", "Tied input/output embeddings"],
];

function configValue(value: unknown): string {
  if (typeof value === "number") {
    return groupDigits(value);
  }
  if (typeof value === "boolean") {
    return value ? "yes" : "no";
  }
  return typeof value === "string" ? value : "—";
}

function configTable(config: ArchitectureConfig): string {
  // The report may carry keys added after this renderer was written: show them too, last.
  const known = new Set<string>(CONFIG_ROWS.map(([key]) => key));
  const extra = Object.keys(config).filter((key) => !known.has(key));
  const rows = [
    ...CONFIG_ROWS.filter(([key]) => key in config).map(([key, label]) => [
      label,
      configValue(config[key]),
    ]),
    ...extra.map((key) => [key, configValue((config as unknown as Record<string, unknown>)[key])]),
  ];
  return table(["Setting", "Value"], rows, ["---", "---:"]);
}

function share(count: number, total: number): string {
  return total > 0 ? `${((100 * count) / total).toFixed(1)} %` : "—";
}

function parametersTable(report: ArchitectureReport): string {
  const { total, byModule } = report.parameters;
  const rows = byModule.map((module) => [
    // Children are indented under their parent so that the tree reads like the repr above.
    `${"\u00a0\u00a0".repeat(module.name.split(".").length - 1)}${module.name}`,
    module.type,
    groupDigits(module.count),
    // A tied lm_head's share would count the embedding's weights twice.
    module.sharedWith ? `same weights as ${module.sharedWith}` : share(module.count, total),
  ]);
  rows.push(["**Total**", report.className, `**${groupDigits(total)}**`, share(total, total)]);
  return table(["Module", "Type", "Parameters", "Share"], rows, ["---", "---", "---:", "---:"]);
}

/** The whole markdown document shown by "Show Phi-3 architecture". */
export function renderArchitectureMarkdown(report: ArchitectureReport): string {
  const fence = fenceFor(report.repr);
  const weights = report.weightsLoaded
    ? "Weights are loaded."
    : report.weightsPending
      ? "Its weights are not loaded yet (downloading, converting or loading): the model was " +
        "built from its config on the meta device, as it will be once they load."
      : "No weights are loaded: the model was built on the meta device, so the structure and " +
        "the counts are exact but it cannot generate text.";
  return [
    `# ${report.className}: ${report.model}`,
    "",
    `**${compactCount(report.parameters.total)} parameters** ` +
      `(${groupDigits(report.parameters.total)}). ${weights}`,
    "",
    "## Module tree",
    "",
    "Exactly what `print(model)` shows:",
    "",
    `${fence}text`,
    report.repr,
    fence,
    "",
    "## Configuration",
    "",
    configTable(report.config),
    "",
    "## Parameters",
    "",
    parametersTable(report),
    "",
  ].join("\n");
}
