/**
 * End to end: the real Python server with the real SmolLM2-135M model, one process for every
 * step (loading costs seconds), spoken to over stdio as the extension speaks to it.
 */

import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { marked, type Tokens } from "marked";
import {
  type CancellationToken,
  CancellationTokenSource,
  DidOpenTextDocumentNotification,
  ExecuteCommandRequest,
  ExitNotification,
  HoverRequest,
  type InitializeResult,
  type InlineCompletionItem,
  type InlineCompletionList,
  InlineCompletionRequest,
  InlineCompletionTriggerKind,
  LSPErrorCodes,
  type MarkupContent,
  type Position,
  ResponseError,
  ShutdownRequest,
} from "vscode-languageserver-protocol/node";
import { renderArchitectureMarkdown } from "../../src/architectureMarkdown";
import { awaitAnswer, stoppedBeforeAnswering } from "../../src/commandAnswer";
import {
  DISMISS_SUGGESTION_NOTIFICATION,
  isArchitectureReport,
  isReadAtCursorResult,
  isWeightReads,
  MEASURE_WEIGHT_READS_COMMAND,
  READ_AT_CURSOR_REQUEST,
  SHOW_ARCHITECTURE_COMMAND,
} from "../../src/protocol";
import { DEFAULT_SETTINGS } from "../../src/settings";
import { renderStatus } from "../../src/statusView";
import { describeWeightReads } from "../../src/weightReads";
import { LanguageServerProcess, vocabularyId } from "./languageServer";

// The first run fetches and converts the offline model (about a minute); later runs load in seconds.
const LOAD_TIMEOUT_MS = 15 * 60_000;
const REQUEST_TIMEOUT_MS = 120_000;

let documentVersion = 0;

async function openDocument(server: LanguageServerProcess, name: string, text: string) {
  const uri = `untitled:/${name}`;
  documentVersion += 1;
  await server.connection.sendNotification(DidOpenTextDocumentNotification.type, {
    textDocument: { uri, languageId: "plaintext", version: documentVersion, text },
  });
  return uri;
}

function inlineCompletion(
  server: LanguageServerProcess,
  uri: string,
  position: Position,
  token = new CancellationTokenSource().token,
) {
  return server.connection.sendRequest(
    InlineCompletionRequest.type,
    {
      textDocument: { uri },
      position,
      context: { triggerKind: InlineCompletionTriggerKind.Automatic },
    },
    token,
  );
}

/** `workspace/executeCommand` without arguments, as the extension sends its commands. */
function executeCommand(server: LanguageServerProcess, command: string): Promise<unknown> {
  return server.connection.sendRequest(ExecuteCommandRequest.type, { command, arguments: [] });
}

function items(
  result: InlineCompletionList | InlineCompletionItem[] | null,
): InlineCompletionItem[] {
  if (result === null) {
    return [];
  }
  return Array.isArray(result) ? result : result.items;
}

void describe(
  "phi3-lsp driven like VS Code drives it",
  { timeout: LOAD_TIMEOUT_MS + 300_000 },
  () => {
    let server: LanguageServerProcess;
    let initializeResult: InitializeResult;

    before(async () => {
      server = LanguageServerProcess.start("smollm2-135m");
      initializeResult = await server.initialize();
      await server.waitForStatus((s) => s.state === "ready" && s.weightsLoaded, LOAD_TIMEOUT_MS);
    });

    after(() => {
      server.kill();
    });

    void it("announces inline completion, hover and the architecture command", () => {
      const capabilities = initializeResult.capabilities;
      assert.ok(capabilities.inlineCompletionProvider, "inline completion is advertised");
      assert.ok(capabilities.hoverProvider, "hover is advertised");
      assert.ok(capabilities.executeCommandProvider?.commands.includes("phi3.showArchitecture"));
    });

    void it("reports loading, then ready, in the shape the status bar reads", () => {
      assert.deepEqual(server.malformedStatuses, []);
      const firstReady = server.statuses.findIndex((s) => s.state === "ready" && s.weightsLoaded);
      assert.ok(
        server.statuses.slice(0, firstReady).some((s) => s.state === "loading"),
        "a loading status came first",
      );
      assert.equal(server.statuses[firstReady]?.model, "smollm2-135m");
    });

    void it(
      "completes 'The capital of France is' with ' Paris' at the cursor",
      { timeout: REQUEST_TIMEOUT_MS },
      async (t) => {
        const text = "The capital of France is";
        const uri = await openDocument(server, "capital.txt", text);
        const seen = server.statuses.length;
        const started = Date.now();
        const result = await inlineCompletion(server, uri, { line: 0, character: text.length });
        t.diagnostic(`inline completion answered in ${Date.now() - started} ms`);
        const [item, ...rest] = items(result);
        assert.ok(item !== undefined, "one suggestion");
        assert.equal(rest.length, 0);
        const insertText =
          typeof item.insertText === "string" ? item.insertText : item.insertText.value;
        assert.ok(insertText.startsWith(" Paris"), JSON.stringify(insertText));
        assert.ok(!insertText.includes(text), "only new text, never the prompt");
        const cursor = { line: 0, character: text.length };
        assert.deepEqual(item.range, { start: cursor, end: cursor });

        // The status after the completion feeds the status bar's tooltip.
        const timed = await server.waitForStatus(
          (s) => s.state === "ready" && s.lastLatencyMs !== null,
          10_000,
          seen,
        );
        assert.ok((timed.lastTokens ?? 0) > 0);
        const view = renderStatus({
          connection: { kind: "running" },
          server: timed,
          requestInFlight: false,
          inlineCompletions: true,
          lastRoundTripMs: undefined,
        });
        assert.match(view.tooltip, /Last completion: \d+ ms on the server, \d+ tokens/);
        assert.match(view.tooltip, /Decode speed: \d+\.\d tokens\/s/);
      },
    );

    void it(
      "shows the token ids of the word under the mouse",
      { timeout: REQUEST_TIMEOUT_MS },
      async () => {
        const text = "The capital of France is";
        const uri = await openDocument(server, "hover.txt", text);
        const hover = await server.connection.sendRequest(HoverRequest.type, {
          textDocument: { uri },
          position: { line: 0, character: 7 },
        });
        assert.ok(hover !== null, "a hover on 'capital'");
        const markdown = (hover.contents as MarkupContent).value;
        assert.equal((hover.contents as MarkupContent).kind, "markdown");
        assert.match(markdown, /capital/);
        // " capital" is one token of SmolLM2's byte-level BPE ("Ġ" marks the leading space).
        const expectedId = vocabularyId("Ġcapital");
        assert.ok(Number.isInteger(expectedId));
        assert.match(markdown, new RegExp(`\\b${expectedId}\\b`));
        assert.deepEqual(hover.range, {
          start: { line: 0, character: 4 },
          end: { line: 0, character: 11 },
        });
      },
    );

    void it(
      "reads the prompt where the cursor rests, and the suggestion there comes from it",
      { timeout: REQUEST_TIMEOUT_MS },
      async (t) => {
        // The whole suggestion: on a busy machine the first 600 ms may hold only " a".
        await server.changeSettings({ answerBudgetMs: 0 });
        t.after(() => server.changeSettings({ answerBudgetMs: DEFAULT_SETTINGS.answerBudgetMs }));
        const line = "def add(a, b):\n    return a + b\n\n";
        const text = line.repeat(20) + "def mul(a, b):\n    return";
        const uri = await openDocument(server, "read-ahead.py", text);
        const lines = text.split("\n");
        const cursor = { line: lines.length - 1, character: (lines.at(-1) ?? "").length };
        const read: unknown = await server.connection.sendRequest(READ_AT_CURSOR_REQUEST, {
          textDocument: { uri },
          position: cursor,
        });
        assert.ok(isReadAtCursorResult(read), JSON.stringify(read));
        assert.ok(read.promptTokens > 200, "the whole text before the cursor");
        assert.equal(read.cachedTokens, read.promptTokens - 1);
        assert.equal(read.readTokens, read.cachedTokens);
        const again: unknown = await server.connection.sendRequest(READ_AT_CURSOR_REQUEST, {
          textDocument: { uri },
          position: cursor,
        });
        assert.ok(isReadAtCursorResult(again) && again.readTokens === 0, "already read");
        const [item] = items(await inlineCompletion(server, uri, cursor));
        assert.ok(item !== undefined, "a suggestion after the read");
        const insertText =
          typeof item.insertText === "string" ? item.insertText : item.insertText.value;
        assert.match(insertText, /a \* b/);
      },
    );

    void it(
      "returns the architecture, which renders as a markdown document",
      { timeout: REQUEST_TIMEOUT_MS },
      async () => {
        const report = await executeCommand(server, SHOW_ARCHITECTURE_COMMAND);
        assert.ok(isArchitectureReport(report), "the documented report shape");
        assert.equal(report.className, "LlamaForCausalLM");
        assert.equal(report.weightsLoaded, true);
        // SmolLM2-135M: 30 decoder layers of width 576, tied embeddings, 134,515,008 parameters.
        assert.equal(report.config.layers, 30);
        assert.equal(report.config.hiddenSize, 576);
        assert.equal(report.parameters.total, 134515008);
        const lmHead = report.parameters.byModule.find((module) => module.name === "lm_head");
        assert.equal(lmHead?.sharedWith, "model.embed_tokens", "the tied output projection");
        assert.ok(report.repr.startsWith("LlamaForCausalLM(\n  (model): LlamaModel("));
        assert.match(report.repr, /\(0-29\): 30 x LlamaDecoderLayer\(/);

        const markdown = renderArchitectureMarkdown(report);
        assert.ok(
          markdown.includes("```text\n" + report.repr + "\n```"),
          "repr verbatim in a code block",
        );
        assert.match(markdown, /\| Decoder layers \| 30 \|/);
        assert.match(markdown, /\*\*134,515,008\*\*/);
      },
    );

    void it(
      "measures how fast the server reads SmolLM2's weights, each of them once",
      { timeout: REQUEST_TIMEOUT_MS },
      async () => {
        const reads = await executeCommand(server, "phi3.measureWeightReads");
        assert.ok(isWeightReads(reads), "the documented result shape");
        // What a pass reads of SmolLM2's 134,515,008 fp32 parameters, the input embeddings being
        // the vocabulary projection: the exact blocks the server holds them as, Q4_1 for its
        // 106,168,320 linear weights (24 bytes for 32 values), Q8_0 for its 28,311,552 embeddings
        // (36 bytes for 32), the rest in fp32.
        const linearWeights = 106168320;
        const embeddings = 28311552;
        const rest = 134515008 - linearWeights - embeddings;
        const bytesRead = rest * 4 + (linearWeights / 32) * 24 + (embeddings / 32) * 36;
        assert.ok(reads.bytesRead >= bytesRead && reads.bytesRead < bytesRead + 1024);
        assert.match(describeWeightReads(reads), /^Phi-3 read the model's 0\.11 GB of weights in /);
      },
    );

    void it(
      "stops a running generation when the request is cancelled",
      { timeout: REQUEST_TIMEOUT_MS },
      async (t) => {
        // No early answer: the request stays open for the whole generation, so the cancel
        // reaches a generation that is still running.
        await server.changeSettings({ answerBudgetMs: 0, maxNewTokens: 300 });
        t.after(() =>
          server.changeSettings({
            answerBudgetMs: DEFAULT_SETTINGS.answerBudgetMs,
            maxNewTokens: DEFAULT_SETTINGS.maxNewTokens,
          }),
        );
        // A prompt the model continues for 184 tokens before it ends (maxNewTokens 300): seconds
        // of work on this CPU, also with fp32's 4-bit drafts (~70 tokens/s; 50 took 0.6 s).
        const text = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n';
        const uri = await openDocument(server, "fib.py", text);
        const seen = server.statuses.length;
        const source = new CancellationTokenSource();
        const pending = inlineCompletion(server, uri, { line: 2, character: 0 }, source.token).then(
          (result) => ({ result, error: undefined }),
          (error: unknown) => ({ result: null, error }),
        );
        await server.waitForStatus((s) => s.state === "generating", 30_000, seen);
        // Past the prompt's forward pass, which cannot be interrupted, into the decode loop.
        await new Promise((resolve) => setTimeout(resolve, 1000));
        const cancelledAt = Date.now();
        const seenAtCancel = server.statuses.length;
        const lastBefore = server.statuses.at(-1);
        source.cancel();
        const { result, error } = await pending;
        const afterCancelMs = Date.now() - cancelledAt;
        // The answer alone could come before the model stops. A generation that was stopped
        // leaves the last completion's figures alone; one that ran to its end would replace them.
        const idle = await server.waitForStatus((s) => s.state === "ready", 30_000, seenAtCancel);
        t.diagnostic(`the model was free ${Date.now() - cancelledAt} ms after $/cancelRequest`);
        assert.equal(idle.lastLatencyMs, lastBefore?.lastLatencyMs, "the generation was stopped");

        if (error !== undefined) {
          assert.ok(error instanceof ResponseError, "the request failed with an LSP error");
          assert.equal(error.code, LSPErrorCodes.RequestCancelled);
        } else {
          assert.deepEqual(items(result), [], "a cancelled request suggests nothing");
        }
        t.diagnostic(`the request ended ${afterCancelMs} ms after $/cancelRequest`);

        // The model is free again: the next request is answered.
        const capital = await openDocument(server, "again.txt", "The capital of France is");
        const next = items(await inlineCompletion(server, capital, { line: 0, character: 24 }));
        assert.equal(next.length, 1);
      },
    );

    void it(
      "stops the continuation in the background when its suggestion is dismissed",
      { timeout: REQUEST_TIMEOUT_MS },
      async (t) => {
        // Answered at once; the rest, 184 tokens, is generated for seconds after the answer.
        await server.changeSettings({ answerBudgetMs: 1, maxNewTokens: 300 });
        t.after(() =>
          server.changeSettings({
            answerBudgetMs: DEFAULT_SETTINGS.answerBudgetMs,
            maxNewTokens: DEFAULT_SETTINGS.maxNewTokens,
          }),
        );
        const text = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n';
        const uri = await openDocument(server, "dismissed.py", text);
        const seen = server.statuses.length;
        const shown = items(await inlineCompletion(server, uri, { line: 2, character: 0 }));
        assert.equal(shown.length, 1, "an early answer");
        await server.connection.sendNotification(DISMISS_SUGGESTION_NOTIFICATION, {
          textDocument: { uri },
        });
        // Its own generation's end: an earlier completion's may still be on its way.
        const generating = await server.waitForStatus(
          (s) => s.state === "generating",
          30_000,
          seen,
        );
        const idle = await server.waitForStatus(
          (s) => s.state === "ready",
          30_000,
          server.statuses.indexOf(generating) + 1,
        );
        // A stopped generation leaves the last completion's figures as they were.
        assert.equal(idle.lastLatencyMs, generating.lastLatencyMs, "the generation was stopped");
      },
    );

    void it(
      "applies a settings change without a restart",
      { timeout: REQUEST_TIMEOUT_MS },
      async () => {
        const text = "The capital of Italy is";
        const uri = await openDocument(server, "italy.txt", text);
        await server.changeSettings({ inlineCompletions: false });
        assert.deepEqual(
          items(await inlineCompletion(server, uri, { line: 0, character: text.length })),
          [],
        );
        // Back on, with a short limit: the next continuation has at most 3 new tokens.
        await server.changeSettings({ inlineCompletions: true, maxNewTokens: 3 });
        const seen = server.statuses.length;
        const [item] = items(
          await inlineCompletion(server, uri, { line: 0, character: text.length }),
        );
        assert.ok(item !== undefined, "a suggestion again");
        const generating = await server.waitForStatus(
          (s) => s.state === "generating",
          10_000,
          seen,
        );
        const done = await server.waitForStatus(
          (s) => s.state === "ready",
          10_000,
          server.statuses.indexOf(generating) + 1,
        );
        assert.ok(
          done.lastTokens !== null && done.lastTokens > 0 && done.lastTokens <= 3,
          `${String(done.lastTokens)} new tokens: ${JSON.stringify(item.insertText)}`,
        );
      },
    );

    void it("shuts down and exits cleanly", { timeout: 30_000 }, async () => {
      await server.connection.sendRequest(ShutdownRequest.type);
      await server.connection.sendNotification(ExitNotification.type);
      assert.equal(await server.exit(20_000), 0);
    });
  },
);

void describe("a workspace folder with files named like the standard library's", () => {
  void it(
    "does not stop the server from starting there",
    { timeout: LOAD_TIMEOUT_MS },
    async () => {
      // The server runs in the workspace folder: a user's own `queue.py` or `json.py` there
      // must not be imported in place of the standard library's.
      const workspace = mkdtempSync(join(tmpdir(), "phi3-workspace-"));
      writeFileSync(join(workspace, "queue.py"), "class Queue:\n    pass\n");
      writeFileSync(join(workspace, "json.py"), 'raise ImportError("the workspace\'s json.py")\n');
      await LanguageServerProcess.with(
        "smollm2-135m",
        { workspaceFolder: workspace },
        async (server) => {
          const result = await server.initialize();
          assert.equal(result.serverInfo?.name, "phi3-lsp");
          const ready = await server.waitForStatus(
            (s) => s.state === "ready" || s.state === "error",
            LOAD_TIMEOUT_MS,
          );
          assert.equal(ready.state, "ready");
        },
      );
    },
  );
});

void describe("the default model offline: Phi-3's tokenizer and config, no weights", () => {
  void it(
    "renders every hover, pipes and backticks too, as one table row per token",
    { timeout: LOAD_TIMEOUT_MS },
    async () => {
      // An empty hub cache, offline: the default model resolves to the offline pack's files.
      const hfHome = mkdtempSync(join(tmpdir(), "phi3-hf-home-"));
      const offline = { env: { HF_HUB_OFFLINE: "1", HF_HOME: hfHome } };
      await LanguageServerProcess.with(DEFAULT_SETTINGS.model, offline, async (server) => {
        await server.initialize();
        await server.waitForStatus((s) => s.state === "ready", LOAD_TIMEOUT_MS);
        // Phi-3 reads `\|` as one token. VS Code renders hovers with marked, which ends a
        // table cell at a pipe after an even number of backslashes.
        const text = "grep 'a\\|b' || echo `x` ``y``";
        const uri = await openDocument(server, "pipes.sh", text);
        for (const word of ["\\|", "||", "`", "``"]) {
          const hover = await server.connection.sendRequest(HoverRequest.type, {
            textDocument: { uri },
            position: { line: 0, character: text.indexOf(word) },
          });
          assert.ok(hover !== null, `a hover on ${word}`);
          const markdown = (hover.contents as MarkupContent).value;
          const table = marked.lexer(markdown).find((token) => token.type === "table");
          assert.ok(table !== undefined, markdown);
          const tokenCount = Number(/ — (\d+) tokens?\n/.exec(markdown)?.[1]);
          const rows = (table as Tokens.Table).rows;
          assert.equal(rows.length, tokenCount, markdown);
          for (const row of rows) {
            assert.equal(row.length, 3, markdown);
            assert.match(row[2]?.text ?? "", /^\d+$/, markdown);
          }
        }
      });
    },
  );
});

void describe("a command asked while the model loads", () => {
  void it(
    "waits for the load in a wait the user can cancel; cancelled, the server answers at once",
    { timeout: LOAD_TIMEOUT_MS },
    async () => {
      await LanguageServerProcess.with("smollm2-135m", {}, async (server) => {
        await server.initialize();
        // The weights' read waits for the load (the architecture is answered before it).
        const askReads = (token: CancellationToken): Promise<unknown> =>
          server.connection.sendRequest(
            ExecuteCommandRequest.type,
            { command: MEASURE_WEIGHT_READS_COMMAND, arguments: [] },
            token,
          );
        // The moment has passed already: both waits show while the model loads.
        const shown: string[] = [];
        const runsOn = new Promise<void>(() => undefined); // no stop in this test
        const waitedFor = awaitAnswer(
          askReads,
          Promise.resolve(),
          (wait) => {
            shown.push("reads");
            return wait(new CancellationTokenSource().token);
          },
          runsOn,
        );
        let cancelledRequest: Promise<unknown> = Promise.resolve();
        const cancelButton = new CancellationTokenSource();
        const cancelled = awaitAnswer(
          (token) => (cancelledRequest = askReads(token)),
          Promise.resolve(),
          (wait) => {
            shown.push("cancelled");
            const ended = wait(cancelButton.token);
            cancelButton.cancel();
            return ended;
          },
          runsOn,
        );
        assert.deepEqual(await cancelled, { kind: "cancelled" });
        await assert.rejects(
          cancelledRequest,
          (error) =>
            error instanceof ResponseError && error.code === LSPErrorCodes.RequestCancelled,
        );
        assert.ok(
          !server.statuses.some((status) => status.state === "ready"),
          "the cancel is answered before the load ends",
        );

        const answered = await waitedFor;
        const reads = answered.kind === "answered" ? answered.answer : answered.kind;
        assert.ok(isWeightReads(reads) && reads.bytesRead > 0, "the loaded model's");
        assert.deepEqual(shown, ["reads", "cancelled"]);
      });
    },
  );

  void it(
    "pending when a restart shuts the server down, is answered as one the server stopped before",
    { timeout: LOAD_TIMEOUT_MS },
    async () => {
      await LanguageServerProcess.with("smollm2-135m", {}, async (server) => {
        await server.initialize();
        const reads = executeCommand(server, MEASURE_WEIGHT_READS_COMMAND);
        // The extension's restart (or stop) begins with shutdown.
        void server.connection.sendRequest(ShutdownRequest.type).catch(() => undefined);
        await assert.rejects(reads, (error) => stoppedBeforeAnswering(error));
        assert.ok(!server.statuses.some((status) => status.state === "ready"));
      });
    },
  );
});
