import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decideAfterClose, RestartBudget } from "../../src/restartBudget";

describe("restart budget", () => {
  it("allows a few restarts, then refuses", () => {
    let now = 0;
    const budget = new RestartBudget(3, 180_000, () => now);
    const answers = [1, 2, 3, 4].map(() => {
      now += 1000;
      return budget.recordCrash();
    });
    assert.deepEqual(answers, [true, true, true, false]);
  });

  it("forgives crashes older than the window", () => {
    let now = 0;
    const budget = new RestartBudget(2, 60_000, () => now);
    assert.equal(budget.recordCrash(), true);
    assert.equal(budget.recordCrash(), true);
    now = 61_000;
    assert.equal(budget.recordCrash(), true);
  });

  it("starts over after a manual restart", () => {
    const budget = new RestartBudget(1, 60_000, () => 0);
    assert.equal(budget.recordCrash(), true);
    assert.equal(budget.recordCrash(), false);
    budget.reset();
    assert.equal(budget.recordCrash(), true);
  });

  it("tells the user what happened first, on the line a notification without buttons shows", () => {
    const message = new RestartBudget(3, 180_000).exhaustedMessage();
    assert.match(message, /^Phi-3: the server stopped 4 times within 3 minutes/);
    assert.match(message, /Restart server/);
  });

  it("never restarts a server that exits while starting, however often", () => {
    const budget = new RestartBudget(3, 180_000, () => 0);
    const decisions = [1, 2, 3, 4, 5].map(() => decideAfterClose(false, budget));
    assert.deepEqual(decisions, Array(5).fill("exitedWhileStarting"));
    // Those exits did not use up the budget for crashes of a running server.
    assert.equal(decideAfterClose(true, budget), "restart");
  });

  it("restarts a crashed running server until the budget is spent", () => {
    const budget = new RestartBudget(3, 180_000, () => 0);
    const decisions = [1, 2, 3, 4].map(() => decideAfterClose(true, budget));
    assert.deepEqual(decisions, ["restart", "restart", "restart", "exhausted"]);
  });
});
