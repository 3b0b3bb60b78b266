import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type ChosenInterpreter,
  ServerLifecycle,
  type ServerSteps,
} from "../../src/serverLifecycle";

const settled = () => new Promise((resolve) => setImmediate(resolve));

/**
 * A session that records the starts and stops asked of it. Its starts take a few turns of the
 * event loop, or, while `holdStarts` is on, until `finishStart` (so that events can come during
 * one); `startsFail` makes them end without a server, as a missing phi3_lsp does.
 */
function fakeSession(options: { python?: string; trusted?: boolean } = {}) {
  const state = {
    python: options.python ?? "/usr/bin/python3",
    trusted: options.trusted ?? true,
    alive: false,
    startsFail: false,
    holdStarts: false,
    waitingForDocument: false,
    /** Called as the interpreter is asked for, before the answer. */
    whileChoosing: (): void => undefined,
  };
  const starts: string[] = [];
  const calls: string[] = [];
  const heldStarts: (() => void)[] = [];
  const steps: ServerSteps<ChosenInterpreter> = {
    chooseInterpreter: async () => {
      calls.push("choose");
      state.whileChoosing();
      await settled(); // the Python extension answers a moment later
      return { command: state.python };
    },
    starting: () => undefined,
    start: async (interpreter) => {
      starts.push(interpreter.command);
      calls.push(`start ${interpreter.command}`);
      state.alive = true;
      if (state.holdStarts) {
        await new Promise<void>((resolve) => heldStarts.push(resolve));
      } else {
        await settled();
      }
      state.alive = !state.startsFail;
    },
    stop: () => {
      if (state.alive) {
        calls.push("stop");
      }
      state.alive = false;
      return Promise.resolve();
    },
    isAlive: () => state.alive,
    isRunning: () => state.alive,
    rereadSettings: () => {
      calls.push("reread settings");
      return Promise.resolve();
    },
    isTrusted: () => state.trusted,
    waitForDocument: () => {
      state.waitingForDocument = true;
      return {
        dispose: () => {
          state.waitingForDocument = false;
        },
      };
    },
    log: {
      info: () => undefined,
      error: (message) => {
        calls.push(`error ${message}`);
      },
    },
  };
  const lifecycle = new ServerLifecycle(steps);
  /** Ends the held start, once it has begun. */
  const finishStart = async () => {
    while (heldStarts.length === 0) {
      await settled();
    }
    heldStarts.shift()?.();
  };
  return { state, starts, calls, lifecycle, finishStart };
}

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
