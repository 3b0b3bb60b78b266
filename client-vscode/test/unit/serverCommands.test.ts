import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SHOW_ARCHITECTURE_COMMAND } from "../../src/protocol";
import { sendServerCommand, StartFailed } from "../../src/serverCommands";
import { WaitCancelled } from "../../src/serverWait";
import { commandDependencies, fakeSession, settled } from "./fakeSession";
import { waitNotification } from "./waitNotification";

const SHOW_ARCHITECTURE = { command: SHOW_ARCHITECTURE_COMMAND, title: "Show Phi-3 architecture" };

/** A server that answers at once, and counts what it was asked. */
function answeringServer() {
  const server = { asked: 0 };
  const answer = () => {
    server.asked += 1;
    return Promise.resolve("LlamaForCausalLM");
  };
  return { server, answer };
}

/** The command asked while the server's start is held (`finishStart` ends it), and waiting. */
async function askedDuringAHeldStart() {
  const session = fakeSession();
  session.state.holdStarts = true;
  void session.lifecycle.startWhenNeeded(() => true);
  const { server, answer } = answeringServer();
  const notification = waitNotification();
  const answered = sendServerCommand(
    SHOW_ARCHITECTURE,
    commandDependencies(session, answer, notification.show),
  );
  await settled();
  return { session, server, notification, answered };
}

describe("a palette command sent to the server", () => {
  it("runs once the start it waited for has finished", async () => {
    const { session, server, notification, answered } = await askedDuringAHeldStart();
    assert.equal(server.asked, 0, "not asked before the server runs");
    await session.finishStart();
    assert.equal(await answered, "LlamaForCausalLM");
    assert.equal(notification.shown.times, 1);
  });

  it("ends quietly when the start fails: that start has said why", async () => {
    const session = fakeSession();
    session.state.startsFail = true; // phi3_lsp missing in that Python
    const { server, answer } = answeringServer();
    await assert.rejects(
      sendServerCommand(SHOW_ARCHITECTURE, commandDependencies(session, answer)),
      StartFailed,
    );
    assert.equal(server.asked, 0);
  });

  it("does not run later when the user cancels its wait", { timeout: 5000 }, async () => {
    const { session, server, notification, answered } = await askedDuringAHeldStart();
    notification.cancel();
    await assert.rejects(answered, WaitCancelled);
    await session.finishStart();
    await settled();
    assert.equal(server.asked, 0, "the server that starts afterwards is not asked");
  });

  it("says to restart the server when it is down and no start is under way", async () => {
    const session = fakeSession();
    session.state.startsFail = true;
    await session.lifecycle.startWhenNeeded(() => true);
    await assert.rejects(
      sendServerCommand(SHOW_ARCHITECTURE, commandDependencies(session, answeringServer().answer)),
      /not running\. Use "Phi-3: Restart server"/,
    );
  });
});
