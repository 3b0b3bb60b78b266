import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { waitForServer } from "../../src/serverWait";
import { fakeSession, settled } from "./fakeSession";
import { waitNotification } from "./waitNotification";

/** A session whose first start is under way and held, as one on a Python that never answers. */
async function sessionWithAHeldStart() {
  const session = fakeSession();
  session.state.holdStarts = true;
  void session.lifecycle.startWhenNeeded(() => true);
  while (session.starts.length === 0) {
    await settled();
  }
  return session;
}

/** A command's wait for the server, shown, then cancelled by the user; its notification. */
async function cancelledWait(
  lifecycle: ReturnType<typeof fakeSession>["lifecycle"],
  state: ReturnType<typeof fakeSession>["state"],
) {
  const notification = waitNotification();
  const wait = waitForServer(lifecycle, () => state.running, notification.show);
  await settled();
  assert.equal(notification.shown.open, true, "the wait is on screen");
  notification.cancel();
  assert.equal(await wait, "cancelled");
  return notification;
}

describe("a command that needs the server", () => {
  it(
    "shows its wait for a start that never ends, and stops waiting when the user cancels",
    { timeout: 5000 },
    async () => {
      const { starts, lifecycle, state } = await sessionWithAHeldStart();
      const notification = await cancelledWait(lifecycle, state);
      assert.equal(notification.shown.open, false, "the notification goes with the wait");
      assert.deepEqual(starts, ["/usr/bin/python3"], "the start goes on; the command does not");
    },
  );

  it(
    "shows its wait while the first start waits for the Python extension, and may cancel it",
    { timeout: 5000 },
    async () => {
      const { starts, lifecycle, state } = fakeSession();
      state.pythonExtensionReady = new Promise(() => undefined); // an extension that never activates
      void lifecycle.startWhenNeeded(() => true);
      await cancelledWait(lifecycle, state);
      assert.deepEqual(starts, [], "no interpreter chosen yet");
    },
  );

  it("stops waiting when the start fails: the start has said why", async () => {
    const { lifecycle, state } = fakeSession();
    state.startsFail = true; // phi3_lsp missing in that Python
    void lifecycle.startWhenNeeded(() => true);
    const notification = waitNotification();
    assert.equal(
      await waitForServer(lifecycle, () => state.running, notification.show),
      "startFailed",
    );
    assert.equal(notification.shown.times, 1);
    assert.equal(notification.shown.open, false);
  });

  it("goes on once a start under way ends with a running server", async () => {
    const { lifecycle, state, finishStart } = await sessionWithAHeldStart();
    const notification = waitNotification();
    const wait = waitForServer(lifecycle, () => state.running, notification.show);
    await finishStart();
    assert.equal(await wait, "running");
    assert.equal(notification.shown.open, false);
  });

  it(
    "goes on waiting through a restart that gives up the start, and runs once it is done",
    { timeout: 5000 },
    async () => {
      const { lifecycle, state, finishStart } = await sessionWithAHeldStart();
      const notification = waitNotification();
      const wait = waitForServer(lifecycle, () => state.running, notification.show);
      await settled();
      // The user, tired of waiting, runs "Restart server" (on a Python that answers).
      const restarted = lifecycle.restart();
      await finishStart();
      await restarted;
      assert.equal(await wait, "running");
      assert.equal(notification.shown.times, 1, "one notification for the whole wait");
      assert.equal(notification.shown.open, false);
    },
  );

  it("starts the server of a window that waits for a document, showing the wait", async () => {
    const { starts, lifecycle, state } = fakeSession();
    await lifecycle.startWhenNeeded(() => false);
    const notification = waitNotification();
    assert.equal(await waitForServer(lifecycle, () => state.running, notification.show), "running");
    assert.equal(notification.shown.times, 1);
    assert.deepEqual(starts, ["/usr/bin/python3"]);
  });

  it("asks a running server at once, with no notification to flash by", async () => {
    const { lifecycle, state } = fakeSession();
    await lifecycle.startWhenNeeded(() => true);
    const notification = waitNotification();
    assert.equal(await waitForServer(lifecycle, () => state.running, notification.show), "running");
    assert.equal(notification.shown.times, 0);
  });

  it("is told at once that the server is down when no start is under way", async () => {
    const { lifecycle, state } = fakeSession();
    state.startsFail = true;
    await lifecycle.startWhenNeeded(() => true); // failed, and said so, before the command
    const notification = waitNotification();
    assert.equal(
      await waitForServer(lifecycle, () => state.running, notification.show),
      "notRunning",
    );
    assert.equal(notification.shown.times, 0);
  });
});
