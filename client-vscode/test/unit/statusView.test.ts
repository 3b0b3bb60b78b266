import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ServerStatus } from "../../src/protocol";
import { installAdvice } from "../../src/pythonInterpreter";
import { RestartBudget } from "../../src/restartBudget";
import { readyStatus } from "./statusFixtures";
import { type StatusInputs, renderStatus, shortModelName } from "../../src/statusView";

const ready = readyStatus("microsoft/Phi-3-mini-4k-instruct");

function inputs(overrides: Partial<StatusInputs>): StatusInputs {
  return {
    connection: { kind: "running" },
    server: ready,
    requestInFlight: false,
    inlineCompletions: true,
    lastRoundTripMs: undefined,
    ...overrides,
  };
}

describe("status bar rendering", () => {
  it("shows a spinner while the server process starts", () => {
    const view = renderStatus(inputs({ connection: { kind: "starting" }, server: undefined }));
    assert.match(view.text, /~spin\)/);
    assert.match(view.tooltip, /Starting/);
    assert.equal(view.onClick, "showMenu");
  });

  it("says that an empty window's server starts with its first file", () => {
    const view = renderStatus(inputs({ connection: { kind: "waiting" }, server: undefined }));
    assert.doesNotMatch(view.text, /~spin/);
    assert.match(view.tooltip, /starts once a file is open/);
    assert.equal(view.isError, false);
  });

  it("shows loading progress with its percentage and message", () => {
    const loading: ServerStatus = {
      ...ready,
      state: "loading",
      model: "smollm2-135m",
      message: "Converting the GGUF file",
      percentage: 40,
      weightsLoaded: false,
    };
    const view = renderStatus(inputs({ server: loading }));
    assert.match(view.text, /40%/);
    assert.match(view.tooltip, /Converting the GGUF file: smollm2-135m 40%/);
    assert.equal(view.isError, false);
  });

  it("says which weight format a model loads in", () => {
    const loading: ServerStatus = {
      ...ready,
      state: "loading",
      model: "smollm2-135m",
      message: "Loading the weights of smollm2-135m",
      percentage: 30,
      weightsLoaded: false,
    };
    const int4 = renderStatus(inputs({ server: { ...loading, weights: "int4" } }));
    assert.match(int4.tooltip, /\bint4\b/);
    const fp32 = renderStatus(inputs({ server: { ...loading, weights: "fp32" } }));
    assert.match(fp32.tooltip, /\bfp32\b/);
    assert.doesNotMatch(fp32.tooltip, /\bint4\b/);
    // A format this extension does not know is named as the server names it.
    const newer = renderStatus(inputs({ server: { ...loading, weights: "constructor" } }));
    assert.match(newer.tooltip, /Weights: constructor$/m);
    // A server that does not say (an older one) gets no line rather than a guess.
    const unsaid = renderStatus(inputs({ server: loading }));
    assert.doesNotMatch(unsaid.tooltip, /\b(fp32|int4)\b/);
  });

  it("names the model once while loading", () => {
    const model = "microsoft/Phi-3-mini-4k-instruct";
    const looking: ServerStatus = {
      ...ready,
      state: "loading",
      model,
      message: `Looking for ${model} on the Hugging Face hub`,
      percentage: 0,
      weightsLoaded: false,
    };
    const view = renderStatus(inputs({ server: looking }));
    assert.equal(view.tooltip.split(model).length - 1, 1, view.tooltip);
  });

  it("names the model when ready, without a spinner", () => {
    const view = renderStatus(inputs({}));
    assert.match(view.text, /Phi-3-mini-4k-instruct$/);
    assert.doesNotMatch(view.text, /microsoft\//);
    assert.doesNotMatch(view.text, /~spin/);
    assert.match(view.tooltip, /ready: microsoft\/Phi-3-mini-4k-instruct/);
  });

  it("spins while the server generates and while our request is on its way", () => {
    const generating = renderStatus(inputs({ server: { ...ready, state: "generating" } }));
    assert.match(generating.text, /^\$\(sync~spin\)/);
    const waiting = renderStatus(inputs({ requestInFlight: true }));
    assert.match(waiting.text, /^\$\(sync~spin\)/);
  });

  it("says when decoding checks 4-bit drafts", () => {
    assert.doesNotMatch(renderStatus(inputs({})).tooltip, /4-bit drafts/);
    const drafting = renderStatus(inputs({ server: { ...ready, int4Drafts: true } }));
    assert.match(drafting.tooltip, /Decoding checks 4-bit drafts: the same text in fewer passes/);
  });

  it("puts the last latency, token count and speed in the tooltip", () => {
    const timed: ServerStatus = {
      ...ready,
      lastLatencyMs: 4321.6,
      lastTokensPerSecond: 11.04,
      lastTokens: 50,
    };
    const view = renderStatus(inputs({ server: timed, lastRoundTripMs: 4400.2 }));
    assert.match(view.tooltip, /4322 ms on the server, 50 tokens/);
    assert.match(view.tooltip, /11\.0 tokens\/s/);
    assert.match(view.tooltip, /Round trip in the editor: 4400 ms\n/);
  });

  it("says when the editor's answer came before the server finished the completion", () => {
    const timed: ServerStatus = { ...ready, lastLatencyMs: 683, lastTokens: 50 };
    const view = renderStatus(inputs({ server: timed, lastRoundTripMs: 63 }));
    assert.match(
      view.tooltip,
      /Round trip in the editor: 63 ms \(answered early; the server went on generating\)/,
    );
  });

  it("says when the last completion had nothing to add rather than '0 tokens'", () => {
    const empty: ServerStatus = { ...ready, lastLatencyMs: 857, lastTokens: 0 };
    const view = renderStatus(inputs({ server: empty }));
    assert.match(view.tooltip, /Last completion: 857 ms on the server, nothing to add/);
    assert.doesNotMatch(view.tooltip, /0 tokens/);
  });

  it("says when inline completions are off", () => {
    const view = renderStatus(inputs({ inlineCompletions: false }));
    assert.match(view.text, /circle-slash/);
    assert.match(view.tooltip, /Inline completions are off/);
  });

  it("says when there are no weights (architecture-only model), and what to do", () => {
    const hint = 'Set phi3.model to "smollm2-135m" for completions from the offline model.';
    const view = renderStatus(
      inputs({ server: { ...ready, weightsLoaded: false, message: hint } }),
    );
    assert.equal(view.text, "$(warning) Phi-3-mini-4k-instruct (no weights)");
    assert.match(view.tooltip, /No weights loaded: hovers and architecture only\. Set phi3\.model/);
    assert.equal(view.isError, false);
  });

  it("turns red and opens the output on a server error", () => {
    const view = renderStatus(
      inputs({
        server: { ...ready, state: "error", message: "Model folder /x has no config.json" },
      }),
    );
    assert.equal(view.isError, true);
    assert.equal(view.onClick, "showOutput");
    assert.match(view.tooltip, /Model folder \/x has no config.json/);
  });

  it("turns red and opens the output when the process failed, whatever it said last", () => {
    const view = renderStatus(
      inputs({ connection: { kind: "failed", reason: "phi3_lsp is not installed" } }),
    );
    assert.equal(view.isError, true);
    assert.equal(view.onClick, "showOutput");
    assert.match(view.tooltip, /phi3_lsp is not installed/);
  });

  it("names the product once in the tooltip of a Python without phi3_lsp", () => {
    // The session passes the notification's own sentence, which starts with "Phi-3: ".
    const advice = installAdvice(
      { kind: "not-installed", detail: "ModuleNotFoundError: No module named 'phi3_lsp'" },
      { command: "/usr/bin/python3", source: "default" },
    );
    const view = renderStatus(inputs({ connection: { kind: "failed", reason: advice } }));
    assert.match(
      view.tooltip,
      /^Phi-3 server: the phi3_lsp package is not installed for \/usr\/bin/,
    );
  });

  it("says, until a restart, that a server which kept stopping was given up on, and the way out", () => {
    // The notification that said so goes by itself (restartBudget.ts): this is what stays.
    const budget = new RestartBudget(3, 180_000, () => 0);
    while (budget.recordCrash()) {
      // the server crashed again, and was restarted
    }
    const view = renderStatus(
      inputs({ connection: { kind: "failed", reason: budget.exhaustedReason() }, server: ready }),
    );
    assert.equal(view.isError, true);
    assert.match(view.tooltip, /stopped 4 times within 3 minutes and is not restarted/);
    assert.match(view.tooltip, /then run "Phi-3: Restart server"/);
  });

  it("shortens model specs to their last path part", () => {
    assert.equal(shortModelName("microsoft/Phi-3-mini-4k-instruct"), "Phi-3-mini-4k-instruct");
    assert.equal(shortModelName("/models/SmolLM2.Q4_1.gguf"), "SmolLM2.Q4_1.gguf");
    assert.equal(shortModelName("C:\\models\\phi3\\"), "phi3");
    assert.equal(shortModelName("smollm2-135m"), "smollm2-135m");
  });
});
