import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fakeSession, settled } from "./fakeSession";

describe("when the server starts and restarts", () => {
  it("starts at once in a window with something to complete, and not again for its documents", async () => {
    const { starts, lifecycle, state } = fakeSession();
    await lifecycle.startWhenNeeded(() => true);
    await Promise.all([lifecycle.documentOpened(), lifecycle.documentOpened()]);
    assert.deepEqual(starts, ["/usr/bin/python3"]);
    assert.equal(state.waitingForDocument, false);
  });

  it("starts nothing in an empty window for the events before its first document", async () => {
    const { calls, lifecycle, state } = fakeSession();
    await lifecycle.startWhenNeeded(() => false);
    assert.equal(state.waitingForDocument, true);
    // The Python extension reports its environment as it activates; a setting changes.
    await Promise.all([
      lifecycle.interpreterMayHaveChanged(),
      lifecycle.interpreterMayHaveChanged(),
      lifecycle.workspaceTrusted(),
      lifecycle.interpreterMayHaveChanged(),
    ]);
    assert.deepEqual(calls, [], "not even an interpreter chosen: the start will choose");
    assert.equal(state.waitingForDocument, true);
  });

  it("starts once for a burst of documents, commands and environment events while waiting", async () => {
    const { starts, calls, lifecycle, state, finishStart } = fakeSession();
    await lifecycle.startWhenNeeded(() => false);
    state.holdStarts = true;
    const burst = [
      lifecycle.interpreterMayHaveChanged(),
      lifecycle.documentOpened(),
      lifecycle.documentOpened(),
      lifecycle.serverNeeded(),
      lifecycle.interpreterMayHaveChanged(),
      lifecycle.documentOpened(),
    ];
    await finishStart();
    // More of the same while the server starts: a folder's files still opening, the Python
    // extension still reporting the environment it had already given the start.
    state.holdStarts = false;
    burst.push(
      lifecycle.documentOpened(),
      lifecycle.interpreterMayHaveChanged(),
      lifecycle.serverNeeded(),
    );
    await Promise.all(burst);
    assert.deepEqual(starts, ["/usr/bin/python3"]);
    assert.equal(state.waitingForDocument, false);
    assert.ok(!calls.some((call) => call.startsWith("error")), calls.join("\n"));
  });

  it("starts once for such a burst also when the start fails: its failure is said once", async () => {
    const { starts, lifecycle, state } = fakeSession();
    await lifecycle.startWhenNeeded(() => false);
    state.startsFail = true; // phi3_lsp missing in that Python: the start tells the user why
    const during: Promise<unknown>[] = [];
    state.whileChoosing = () => {
      // Raised while the start asks for the interpreter, and answered with this one.
      state.whileChoosing = () => undefined;
      during.push(lifecycle.interpreterMayHaveChanged(), lifecycle.serverNeeded());
    };
    await Promise.all([
      lifecycle.documentOpened(),
      lifecycle.interpreterMayHaveChanged(),
      lifecycle.documentOpened(),
      lifecycle.interpreterMayHaveChanged(),
    ]);
    await Promise.all(during);
    assert.equal(during.length, 2);
    assert.deepEqual(starts, ["/usr/bin/python3"]);
  });

  it("restarts once on the interpreter chosen after the start, however many events say so", async () => {
    const { starts, lifecycle, state, finishStart } = fakeSession();
    state.holdStarts = true;
    const started = lifecycle.startWhenNeeded(() => true);
    await finishStart(); // the first start has chosen its interpreter and ends now
    state.holdStarts = false;
    state.python = "/home/me/.venv/bin/python";
    await Promise.all([
      started,
      lifecycle.interpreterMayHaveChanged(),
      lifecycle.interpreterMayHaveChanged(),
      lifecycle.interpreterMayHaveChanged(),
    ]);
    assert.deepEqual(starts, ["/usr/bin/python3", "/home/me/.venv/bin/python"]);
  });

  it("keeps a running server whose interpreter an event leaves as it was", async () => {
    const { starts, calls, lifecycle } = fakeSession();
    await lifecycle.startWhenNeeded(() => true);
    await lifecycle.interpreterMayHaveChanged();
    assert.deepEqual(starts, ["/usr/bin/python3"]);
    assert.ok(!calls.includes("stop"));
  });

  it("starts a server that is down when its interpreter is chosen again after the start", async () => {
    const { starts, lifecycle, state } = fakeSession();
    state.startsFail = true;
    await lifecycle.startWhenNeeded(() => true);
    // The user installs phi3_lsp, then picks the same environment again.
    state.startsFail = false;
    await lifecycle.interpreterMayHaveChanged();
    assert.deepEqual(starts, ["/usr/bin/python3", "/usr/bin/python3"]);
    assert.equal(state.alive, true);
  });

  it("lets a command in a waiting window wait for the start it causes", async () => {
    const { starts, lifecycle, state } = fakeSession();
    await lifecycle.startWhenNeeded(() => false);
    assert.equal(await lifecycle.serverNeeded(), true);
    assert.equal(state.alive, true, "the server runs when the command goes on");
    assert.equal(await lifecycle.serverNeeded(), false, "no start the second time");
    assert.deepEqual(starts, ["/usr/bin/python3"]);
  });

  it("lets a command during the first start wait for it instead of finding no server", async () => {
    const { starts, lifecycle, state, finishStart } = fakeSession();
    state.holdStarts = true;
    void lifecycle.startWhenNeeded(() => true);
    while (starts.length === 0) {
      await settled(); // the server's process is starting: the handshake takes a second or two
    }
    const command = lifecycle.serverNeeded();
    await finishStart();
    assert.equal(await command, true);
    assert.equal(state.alive, true);
    assert.deepEqual(starts, ["/usr/bin/python3"]);
  });

  it("re-reads the settings of a server on the same interpreter when the workspace is trusted", async () => {
    const { starts, calls, lifecycle, state } = fakeSession({ trusted: false });
    await lifecycle.startWhenNeeded(() => true);
    state.trusted = true;
    await lifecycle.workspaceTrusted();
    assert.deepEqual(starts, ["/usr/bin/python3"]);
    assert.ok(calls.includes("reread settings"));
  });

  it(
    "gives up a start that never ends when the user restarts, and starts anew",
    { timeout: 5000 },
    async () => {
      const { starts, calls, lifecycle, state, finishStart } = fakeSession();
      state.holdStarts = true; // a Python that never answers the handshake
      void lifecycle.startWhenNeeded(() => true);
      while (starts.length === 0) {
        await settled();
      }
      const restarted = lifecycle.restart();
      await finishStart(); // the new start's handshake
      await restarted;
      assert.deepEqual(starts, ["/usr/bin/python3", "/usr/bin/python3"]);
      assert.ok(calls.includes("abandon start"), calls.join("\n"));
      assert.equal(state.running, true);
    },
  );

  it(
    "stops a start that never ends when the window closes, without waiting for it",
    { timeout: 5000 },
    async () => {
      const { starts, lifecycle, state } = fakeSession();
      state.holdStarts = true;
      void lifecycle.startWhenNeeded(() => true);
      while (starts.length === 0) {
        await settled();
      }
      await lifecycle.dispose();
      assert.equal(state.alive, false, "no server process left behind");
      assert.deepEqual(starts, ["/usr/bin/python3"]);
    },
  );

  it("starts nothing once disposed", async () => {
    const { starts, lifecycle, state } = fakeSession();
    await lifecycle.startWhenNeeded(() => false);
    await lifecycle.dispose();
    assert.equal(state.waitingForDocument, false);
    await Promise.all([
      lifecycle.documentOpened(),
      lifecycle.serverNeeded(),
      lifecycle.restart(),
      lifecycle.interpreterMayHaveChanged(),
    ]);
    assert.deepEqual(starts, []);
  });

  it("starts nothing when disposed while an environment event chooses its interpreter", async () => {
    const { state, starts, lifecycle } = fakeSession();
    await lifecycle.startWhenNeeded(() => true);
    // The Python extension reports a new environment; as it is asked, the window closes.
    state.python = "/venv/bin/python";
    let disposed: Promise<void> | undefined;
    state.whileChoosing = () => {
      disposed = lifecycle.dispose();
    };
    await lifecycle.interpreterMayHaveChanged();
    await disposed;
    assert.deepEqual(starts, ["/usr/bin/python3"]);
    assert.equal(state.alive, false);
  });
});
