import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  CompletionRequest,
  ExecuteCommandRequest,
  HoverRequest,
  InlineCompletionRequest,
} from "vscode-languageserver-protocol";
import { isFeatureLeftOut } from "../../src/clientFeatures";

describe("client features", () => {
  it("leaves out classic completion, so VS Code shows the continuation only as ghost text", () => {
    assert.equal(isFeatureLeftOut(CompletionRequest.method), true);
  });

  it("leaves out the generic execute-command feature, which would register phi3.* twice", () => {
    assert.equal(isFeatureLeftOut(ExecuteCommandRequest.method), true);
  });

  it("keeps inline completion and hover", () => {
    assert.equal(isFeatureLeftOut(InlineCompletionRequest.method), false);
    assert.equal(isFeatureLeftOut(HoverRequest.method), false);
  });
});
