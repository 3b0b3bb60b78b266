import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  DEFAULT_SETTINGS,
  initializationOptions,
  readSettings,
  RESTRICTED_KEYS,
  serverArguments,
} from "../../src/settings";

interface ContributedSetting {
  default?: unknown;
  description?: string;
  markdownDescription?: string;
}

function contributedSettings(): Record<string, ContributedSetting> {
  const manifest = JSON.parse(readFileSync(join(__dirname, "../../../package.json"), "utf8")) as {
    contributes: { configuration: { properties: Record<string, ContributedSetting> } };
  };
  return manifest.contributes.configuration.properties;
}

function lookupFrom(values: Record<string, unknown>) {
  return (key: string): unknown => values[key];
}

describe("settings", () => {
  it("contributes every phi3 setting with a description and a default", () => {
    const contributed = contributedSettings();
    const expected = [
      "model",
      "maxNewTokens",
      "answerBudgetMs",
      "contextTokens",
      "threads",
      "weights",
      "int4Drafts",
      "inlineCompletions",
      "readAtCursor",
      "debounceMs",
      "pythonPath",
      "trace.server",
    ];
    for (const key of expected) {
      const setting = contributed[`phi3.${key}`];
      assert.ok(setting, `phi3.${key} is contributed`);
      assert.notEqual(setting.default, undefined, `phi3.${key} has a default`);
      assert.ok(
        (setting.description ?? setting.markdownDescription ?? "").length > 20,
        `phi3.${key} has a description`,
      );
    }
  });

  it("takes the settings that choose what runs from user settings only in Restricted Mode", () => {
    const manifest = JSON.parse(readFileSync(join(__dirname, "../../../package.json"), "utf8")) as {
      capabilities: {
        untrustedWorkspaces: { supported: string; restrictedConfigurations: string[] };
      };
    };
    const { supported, restrictedConfigurations } = manifest.capabilities.untrustedWorkspaces;
    assert.equal(supported, "limited");
    // A misspelt key would restrict nothing, silently.
    const contributed = contributedSettings();
    for (const key of restrictedConfigurations) {
      assert.ok(contributed[key], `${key} is a contributed setting`);
    }
    assert.deepEqual([...restrictedConfigurations].sort(), [
      "phi3.model",
      "phi3.pythonPath",
      "phi3.trustRemoteCode",
    ]);
    // The keys a command's write leaves to the user's settings in Restricted Mode.
    assert.deepEqual(
      RESTRICTED_KEYS.map((key) => `phi3.${key}`).sort(),
      [...restrictedConfigurations].sort(),
    );
  });

  it("uses the same defaults as the settings editor shows", () => {
    const contributed = contributedSettings();
    for (const [key, value] of Object.entries(DEFAULT_SETTINGS)) {
      assert.deepEqual(contributed[`phi3.${key}`]?.default, value, `default of phi3.${key}`);
    }
  });

  it("defaults to Phi-3-mini with 50 new tokens, answered after 600 ms, when nothing is set", () => {
    const settings = readSettings(lookupFrom({}));
    assert.equal(settings.model, "microsoft/Phi-3-mini-4k-instruct");
    assert.equal(settings.maxNewTokens, 50);
    assert.equal(settings.answerBudgetMs, 600);
    assert.equal(settings.inlineCompletions, true);
  });

  it("takes valid values as they are", () => {
    const settings = readSettings(
      lookupFrom({
        model: "  smollm2-135m ",
        maxNewTokens: 12,
        answerBudgetMs: 0,
        contextTokens: 64,
        threads: 2,
        weights: "int4",
        int4Drafts: false,
        inlineCompletions: false,
        readAtCursor: false,
        debounceMs: 0,
        pythonPath: "/opt/venv/bin/python",
        trustRemoteCode: true,
      }),
    );
    assert.deepEqual(settings, {
      model: "smollm2-135m",
      maxNewTokens: 12,
      answerBudgetMs: 0,
      contextTokens: 64,
      threads: 2,
      weights: "int4",
      int4Drafts: false,
      inlineCompletions: false,
      readAtCursor: false,
      debounceMs: 0,
      pythonPath: "/opt/venv/bin/python",
      trustRemoteCode: true,
    });
  });

  it("falls back to the default for each invalid value, keeping the valid ones", () => {
    const settings = readSettings(
      lookupFrom({
        model: "",
        maxNewTokens: 0,
        answerBudgetMs: 60_001,
        contextTokens: 1.5,
        threads: -1,
        weights: "int8",
        inlineCompletions: "yes",
        readAtCursor: 1,
        debounceMs: 10_000,
        pythonPath: 42,
      }),
    );
    assert.deepEqual(settings, DEFAULT_SETTINGS);
    assert.equal(readSettings(lookupFrom({ maxNewTokens: 513, threads: 4 })).maxNewTokens, 50);
    assert.equal(readSettings(lookupFrom({ maxNewTokens: 513, threads: 4 })).threads, 4);
  });

  it("sends the server only the keys it knows, under phi3", () => {
    const settings = readSettings(
      lookupFrom({ model: "smollm2-135m", debounceMs: 100, answerBudgetMs: 250 }),
    );
    assert.deepEqual(initializationOptions(settings), {
      phi3: {
        model: "smollm2-135m",
        maxNewTokens: 50,
        answerBudgetMs: 250,
        contextTokens: 1024,
        threads: 0,
        weights: "fp32",
        int4Drafts: true,
        inlineCompletions: true,
        readAtCursor: true,
        trustRemoteCode: false,
      },
    });
  });

  it("starts the server as python -P -m phi3_lsp --model <model>", () => {
    const settings = readSettings(lookupFrom({ model: "/models/my model.gguf" }));
    assert.deepEqual(serverArguments(settings), [
      "-P",
      "-m",
      "phi3_lsp",
      "--model",
      "/models/my model.gguf",
    ]);
  });
});
