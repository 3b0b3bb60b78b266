import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type * as vscode from "vscode";
import { ErrorCodes, LSPErrorCodes, ResponseError } from "vscode-languageserver-protocol";
import {
  askThroughRestart,
  awaitAnswer,
  followSlowAnswerReason,
  slowAnswerReason,
} from "../../src/commandAnswer";
import { MEASURE_WEIGHT_READS_COMMAND, SHOW_ARCHITECTURE_COMMAND } from "../../src/protocol";
import { sendServerCommand } from "../../src/serverCommands";
import { commandDependencies, fakeSession, settled } from "./fakeSession";
import { readyStatus, statusSource } from "./statusFixtures";
import { waitNotification } from "./waitNotification";

/** A moment that passes when the test says so. */
function moment() {
  let pass = (): void => undefined;
  const passed = new Promise<void>((resolve) => {
    pass = resolve;
  });
  return { passed, pass };
}

/** The stop of a server that runs on: none. */
const aServerThatRuns = new Promise<void>(() => undefined);

/**
 * A server that answers `phi3.showArchitecture` when the test says (after its model's load), and
 * answers a cancelled request at once with an error, as pygls does ($/cancelRequest).
 */
function loadingServer() {
  const requests: { cancelled: boolean }[] = [];
  let answer: (report: string) => void = () => undefined;
  const ask = (token: vscode.CancellationToken): Promise<string> => {
    const request = { cancelled: false };
    requests.push(request);
    return new Promise<string>((resolve, reject) => {
      answer = resolve;
      token.onCancellationRequested(() => {
        request.cancelled = true;
        reject(new Error("Request cancelled (-32800)"));
      });
    });
  };
  const loaded = (report: string) => {
    answer(report);
  };
  return { ask, requests, loaded };
}

/** A request to a loading server whose moment has passed: its wait is on screen. */
async function slowAnswerShown() {
  const server = loadingServer();
  const notification = waitNotification();
  const aMoment = moment();
  const answered = awaitAnswer(server.ask, aMoment.passed, notification.show, aServerThatRuns);
  aMoment.pass();
  await settled();
  return { server, notification, answered };
}

describe("a command's request to the running server", () => {
  it("shows nothing for an answer that comes within a moment", async () => {
    const server = loadingServer();
    const notification = waitNotification();
    const aMoment = moment();
    const answered = awaitAnswer(server.ask, aMoment.passed, notification.show, aServerThatRuns);
    server.loaded("LlamaForCausalLM");
    assert.deepEqual(await answered, { kind: "answered", answer: "LlamaForCausalLM" });
    aMoment.pass();
    await settled();
    assert.equal(notification.shown.times, 0, "no notification flashes by");
  });

  it("shows a wait that lasts more than a moment, until the answer comes", async () => {
    const { server, notification, answered } = await slowAnswerShown();
    assert.equal(notification.shown.open, true, "the wait is on screen while the model loads");
    server.loaded("LlamaForCausalLM");
    assert.deepEqual(await answered, { kind: "answered", answer: "LlamaForCausalLM" });
    assert.equal(notification.shown.open, false, "the notification goes with the wait");
    assert.equal(server.requests[0]?.cancelled, false);
  });

  it("cancels the request when the user cancels its wait, without waiting for the load", async () => {
    const { server, notification, answered } = await slowAnswerShown();
    notification.cancel();
    assert.deepEqual(await answered, { kind: "cancelled" });
    assert.equal(notification.shown.open, false);
    assert.deepEqual(server.requests, [{ cancelled: true }], "the server is told to stop");
  });

  it("fails as the request does, with nothing shown for a quick failure", async () => {
    const notification = waitNotification();
    const failing = () => Promise.reject(new Error("No architecture to show: no model is loaded."));
    await assert.rejects(
      awaitAnswer(failing, moment().passed, notification.show, aServerThatRuns),
      /no model/,
    );
    assert.equal(notification.shown.times, 0);
  });
});

describe("the line under a slow answer's wait", () => {
  /** The status of a server loading smollm2-135m with `weights`. */
  const loading = (weights: string) => ({
    ...readyStatus("smollm2-135m"),
    state: "loading" as const,
    weights,
  });

  it("says the architecture waits for the model's configuration, not its weights", () => {
    const reason = slowAnswerReason(loading("fp32"), SHOW_ARCHITECTURE_COMMAND) ?? "";
    assert.match(
      reason,
      /once the configuration of smollm2-135m has been read \(before its weights\)/,
    );
    assert.doesNotMatch(reason, /has loaded/);
  });

  it("says the weights' read waits for the model's load, which the status bar shows", () => {
    assert.match(
      slowAnswerReason(loading("fp32"), MEASURE_WEIGHT_READS_COMMAND) ?? "",
      /once smollm2-135m has loaded \(the status bar shows how far\)/,
    );
  });

  it("says the architecture waits for the whole load with int4 weights", () => {
    assert.match(
      slowAnswerReason(loading("int4"), SHOW_ARCHITECTURE_COMMAND) ?? "",
      /once smollm2-135m has loaded/,
    );
  });

  it("follows the status while the wait shows: another format, then the load's end", () => {
    const status = statusSource(loading("fp32"));
    const shown: string[] = [];
    const following = followSlowAnswerReason(status.source, SHOW_ARCHITECTURE_COMMAND, (line) =>
      shown.push(line),
    );
    status.change(loading("fp32")); // a percentage more: the same line
    status.change(loading("int4")); // the user picked int4 meanwhile
    status.change(readyStatus("smollm2-135m"));
    following.dispose();
    status.change(loading("fp32"));
    assert.equal(shown.length, 3);
    assert.match(shown[0] ?? "", /configuration of smollm2-135m/);
    assert.match(shown[1] ?? "", /once smollm2-135m has loaded/);
    assert.equal(shown[2], "");
    assert.equal(status.listeners.size, 0);
  });

  it("says nothing when the server's status gives no reason", () => {
    assert.equal(
      slowAnswerReason(readyStatus("smollm2-135m"), SHOW_ARCHITECTURE_COMMAND),
      undefined,
    );
    assert.equal(slowAnswerReason(undefined, MEASURE_WEIGHT_READS_COMMAND), undefined);
  });
});

/**
 * A server that answers each request with the report of the process that got it, when the test
 * says; stopping a process answers what is pending there as pygls does at shutdown, unless
 * `shutdownTimesOut`: a process that does not answer the shutdown in time leaves its requests
 * unanswered, and the library does not reject them either (it disposes the connection only
 * after a shutdown in time).
 */
function restartableServer(
  state: ReturnType<typeof fakeSession>["state"],
  { shutdownTimesOut = false } = {},
) {
  let process = 1;
  const pending: { answer(report: string): void; reject(error: unknown): void }[] = [];
  state.whileStopping = () => {
    process += 1;
    if (shutdownTimesOut) {
      pending.splice(0);
      return;
    }
    for (const request of pending.splice(0)) {
      request.reject(
        new ResponseError(LSPErrorCodes.RequestCancelled, 'Request with id "4" is canceled'),
      );
    }
  };
  const request = () =>
    new Promise<string>((answer, reject) => {
      pending.push({ answer, reject });
    });
  const answerAll = () => {
    for (const request of pending.splice(0)) {
      request.answer(`the architecture from process ${process}`);
    }
  };
  return { request, answerAll, pending };
}

/**
 * Resolves once `server` has a request pending, or after enough turns of the event loop for a
 * command to have asked (a command that never asks must fail its test, not spin on).
 */
async function untilAsked(server: { readonly pending: readonly unknown[] }) {
  for (let turn = 0; turn < 1000 && server.pending.length === 0; turn++) {
    await settled();
  }
}

/** "Show Phi-3 architecture" as the session sends it, to `session`'s server (serverCommands.ts). */
function showArchitecture(
  session: ReturnType<typeof fakeSession>,
  answer: () => Promise<string>,
): Promise<unknown> {
  return sendServerCommand(
    { command: SHOW_ARCHITECTURE_COMMAND, title: "Show Phi-3 architecture" },
    commandDependencies(session, answer),
  );
}

describe("a command whose server stops before it answers", () => {
  for (const shutdownTimesOut of [false, true]) {
    it(
      "is asked again of the server a restart brings, and answered by it" +
        (shutdownTimesOut ? ", also when the old one's shutdown timed out" : ""),
      { timeout: 5000 },
      async () => {
        const session = fakeSession();
        const { lifecycle, state } = session;
        await lifecycle.startWhenNeeded(() => true);
        const server = restartableServer(state, { shutdownTimesOut });
        const answered = showArchitecture(session, server.request);
        await settled();
        await lifecycle.restart(); // "Restart server" while the command waits for the load
        await untilAsked(server);
        server.answerAll();
        assert.equal(await answered, "the architecture from process 2");
      },
    );
  }

  it(
    "ends, rather than waiting for good, when a stop that timed out leaves it unanswered",
    { timeout: 5000 },
    async () => {
      const session = fakeSession();
      const { lifecycle, state } = session;
      await lifecycle.startWhenNeeded(() => true);
      const server = restartableServer(state, { shutdownTimesOut: true });
      const answered = showArchitecture(session, server.request);
      await settled();
      await lifecycle.stop(); // the window closes, or the server's last stop
      // Told in plain words: no JSON-RPC wording, no wait left on screen.
      await assert.rejects(answered, /stopped before it answered|not ?running/i);
    },
  );

  it("says so in plain words when no restart follows (a crash)", async () => {
    const session = fakeSession();
    await session.lifecycle.startWhenNeeded(() => true);
    // What the connection rejects pending requests with when the server's process ends.
    const crashed = () =>
      Promise.reject(
        new ResponseError(
          ErrorCodes.PendingResponseRejected,
          "Pending response rejected since connection got disposed",
        ),
      );
    await assert.rejects(showArchitecture(session, crashed), (error: Error) =>
      error.message.startsWith('the server stopped before it answered "Show Phi-3 architecture"'),
    );
  });

  it("asks again only once", async () => {
    let asked = 0;
    const stopped = () => {
      asked += 1;
      return Promise.reject(new ResponseError(LSPErrorCodes.RequestCancelled, "canceled"));
    };
    await assert.rejects(
      askThroughRestart(stopped, () => true, "Show Phi-3 architecture"),
      /stopped before it answered/,
    );
    assert.equal(asked, 2);
  });

  it("passes the server's own refusal on as it is", async () => {
    const refusal = new ResponseError(
      LSPErrorCodes.RequestFailed,
      "No weights to read: no model is loaded.",
    );
    await assert.rejects(
      askThroughRestart(
        () => Promise.reject(refusal),
        () => true,
        "Measure",
      ),
      (error) => error === refusal,
    );
  });
});
