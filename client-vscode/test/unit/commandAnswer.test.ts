import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type * as vscode from "vscode";
import { RequestCancellation } from "../../src/cancellation";
import { awaitAnswer, slowAnswerReason } from "../../src/commandAnswer";
import type { ShowWait } from "../../src/serverWait";
import { settled } from "./fakeSession";
import { readyStatus } from "./statusFixtures";

/** A moment that passes when the test says so. */
function moment() {
  let pass = (): void => undefined;
  const passed = new Promise<void>((resolve) => {
    pass = resolve;
  });
  return { passed, pass };
}

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

/** The notification a slow answer's wait shows, which the user can cancel. */
function waitNotification() {
  const cancelButton = new RequestCancellation();
  const shown = { times: 0, open: false };
  const show: ShowWait = async (wait) => {
    shown.times += 1;
    shown.open = true;
    try {
      return await wait(cancelButton.token);
    } finally {
      shown.open = false;
    }
  };
  const cancel = () => {
    cancelButton.cancel();
  };
  return { show, shown, cancel };
}

describe("a command's request to the running server", () => {
  it("shows nothing for an answer that comes within a moment", async () => {
    const server = loadingServer();
    const notification = waitNotification();
    const aMoment = moment();
    const answered = awaitAnswer(server.ask, aMoment.passed, notification.show);
    server.loaded("LlamaForCausalLM");
    assert.deepEqual(await answered, { kind: "answered", answer: "LlamaForCausalLM" });
    aMoment.pass();
    await settled();
    assert.equal(notification.shown.times, 0, "no notification flashes by");
  });

  it("shows a wait that lasts more than a moment, until the answer comes", async () => {
    const server = loadingServer();
    const notification = waitNotification();
    const aMoment = moment();
    const answered = awaitAnswer(server.ask, aMoment.passed, notification.show);
    aMoment.pass();
    await settled();
    assert.equal(notification.shown.open, true, "the wait is on screen while the model loads");
    server.loaded("LlamaForCausalLM");
    assert.deepEqual(await answered, { kind: "answered", answer: "LlamaForCausalLM" });
    assert.equal(notification.shown.open, false, "the notification goes with the wait");
    assert.equal(server.requests[0]?.cancelled, false);
  });

  it("cancels the request when the user cancels its wait, without waiting for the load", async () => {
    const server = loadingServer();
    const notification = waitNotification();
    const aMoment = moment();
    const answered = awaitAnswer(server.ask, aMoment.passed, notification.show);
    aMoment.pass();
    await settled();
    notification.cancel();
    assert.deepEqual(await answered, { kind: "cancelled" });
    assert.equal(notification.shown.open, false);
    assert.deepEqual(server.requests, [{ cancelled: true }], "the server is told to stop");
  });

  it("fails as the request does, with nothing shown for a quick failure", async () => {
    const notification = waitNotification();
    const failing = () => Promise.reject(new Error("No architecture to show: no model is loaded."));
    await assert.rejects(awaitAnswer(failing, moment().passed, notification.show), /no model/);
    assert.equal(notification.shown.times, 0);
  });
});

describe("the line under a slow answer's wait", () => {
  it("says the answer waits for the model's load, which the status bar shows", () => {
    const loading = { ...readyStatus("smollm2-135m"), state: "loading" as const };
    assert.match(slowAnswerReason(loading) ?? "", /once smollm2-135m has loaded/);
  });

  it("says nothing when the server's status gives no reason", () => {
    assert.equal(slowAnswerReason(readyStatus("smollm2-135m")), undefined);
    assert.equal(slowAnswerReason(undefined), undefined);
  });
});
