import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  compactCount,
  groupDigits,
  renderArchitectureMarkdown,
} from "../../src/architectureMarkdown";
import { isArchitectureReport } from "../../src/protocol";
import { phi3MiniReport } from "./architectureFixtures";

const report = phi3MiniReport;

function codeBlocks(markdown: string): string[] {
  const blocks: string[] = [];
  const fence = /^(`{3,})[^\n`]*\n([\s\S]*?)\n\1$/gm;
  for (const match of markdown.matchAll(fence)) {
    blocks.push(match[2] ?? "");
  }
  return blocks;
}

function tableRow(markdown: string, firstCell: string): string[] | undefined {
  for (const line of markdown.split("\n")) {
    const cells = line
      .split(/(?<!\\)\|/)
      .slice(1, -1)
      .map((cell) => cell.trim());
    if (cells[0] === firstCell) {
      return cells;
    }
  }
  return undefined;
}

describe("architecture markdown", () => {
  const markdown = renderArchitectureMarkdown(report);

  it("shows the module tree exactly as print(model), in one code block", () => {
    assert.deepEqual(codeBlocks(markdown), [report.repr]);
  });

  it("titles the document with the class and the model", () => {
    assert.equal(markdown.split("\n")[0], "# Phi3ForCausalLM: microsoft/Phi-3-mini-4k-instruct");
  });

  it("has a configuration table with readable numbers", () => {
    assert.deepEqual(tableRow(markdown, "Decoder layers"), ["Decoder layers", "32"]);
    assert.deepEqual(tableRow(markdown, "Vocabulary size"), ["Vocabulary size", "32,064"]);
    assert.deepEqual(tableRow(markdown, "Context length"), ["Context length", "4,096"]);
    assert.deepEqual(tableRow(markdown, "Tied input/output embeddings"), [
      "Tied input/output embeddings",
      "no",
    ]);
  });

  it("has a parameter table with counts, shares and the total", () => {
    assert.deepEqual(tableRow(markdown, "lm_head"), ["lm_head", "Linear", "98,500,608", "2.6 %"]);
    assert.deepEqual(tableRow(markdown, "**Total**"), [
      "**Total**",
      "Phi3ForCausalLM",
      "**3,821,079,552**",
      "100.0 %",
    ]);
    assert.match(markdown, /\*\*3\.82 B parameters\*\*/);
  });

  it("says which module shares its weights with another, instead of a share of the total", () => {
    const tied = renderArchitectureMarkdown({
      ...report,
      parameters: {
        total: 134515008,
        byModule: [
          { name: "model.embed_tokens", type: "Embedding", count: 28311552, sharedWith: null },
          { name: "lm_head", type: "Linear", count: 28311552, sharedWith: "model.embed_tokens" },
        ],
      },
    });
    assert.deepEqual(tableRow(tied, "model.embed_tokens"), [
      "model.embed_tokens",
      "Embedding",
      "28,311,552",
      "21.0 %",
    ]);
    assert.deepEqual(tableRow(tied, "lm_head"), [
      "lm_head",
      "Linear",
      "28,311,552",
      "same weights as model.embed_tokens",
    ]);
  });

  it("indents child modules under their parent", () => {
    const child = markdown.split("\n").find((line) => line.includes("model.embed_tokens"));
    assert.ok(child?.startsWith("| \u00a0\u00a0model.embed_tokens |"), child);
  });

  it("says when the model has no weights", () => {
    assert.match(markdown, /No weights are loaded/);
    const loaded = renderArchitectureMarkdown({ ...report, weightsLoaded: true });
    assert.doesNotMatch(loaded, /No weights are loaded/);
  });

  it("says when the weights are not loaded yet", () => {
    const pending = renderArchitectureMarkdown({ ...report, weightsPending: true });
    assert.match(pending, /Its weights are not loaded yet/);
    assert.doesNotMatch(pending, /No weights are loaded/);
    assert.doesNotMatch(markdown, /not loaded yet/);
  });

  it("keeps a repr with backticks inside its code block", () => {
    const tricky = "Custom(\n  (note): ```quoted```\n)";
    const rendered = renderArchitectureMarkdown({ ...report, repr: tricky });
    assert.deepEqual(codeBlocks(rendered), [tricky]);
  });

  it("escapes table separators in names", () => {
    const rendered = renderArchitectureMarkdown({
      ...report,
      parameters: { total: 10, byModule: [{ name: "a|b", type: "X", count: 10 }] },
    });
    assert.ok(rendered.includes("| a\\|b | X | 10 | 100.0 % |"));
  });
});

describe("number formatting", () => {
  it("groups digits by thousands", () => {
    assert.equal(groupDigits(0), "0");
    assert.equal(groupDigits(999), "999");
    assert.equal(groupDigits(1000), "1,000");
    assert.equal(groupDigits(134515008), "134,515,008");
  });

  it("quotes model sizes the usual way", () => {
    assert.equal(compactCount(3821079552), "3.82 B");
    assert.equal(compactCount(134515008), "134.5 M");
    assert.equal(compactCount(28311552), "28.31 M");
    assert.equal(compactCount(576), "576");
  });
});

describe("architecture report check", () => {
  it("accepts the documented shape", () => {
    assert.equal(isArchitectureReport(JSON.parse(JSON.stringify(report))), true);
  });

  it("rejects results that are not a report", () => {
    assert.equal(isArchitectureReport(null), false);
    assert.equal(isArchitectureReport({ ...report, repr: undefined }), false);
    assert.equal(
      isArchitectureReport({ ...report, parameters: { total: 1, byModule: [{ name: 1 }] } }),
      false,
    );
  });
});
