import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SHOW_ARCHITECTURE_COMMAND } from "../../src/protocol";
import {
  chooseInterpreterInTime,
  interpreterAnsweredInTime,
} from "../../src/pythonExtensionAnswer";
import { DEFAULT_PYTHON } from "../../src/pythonInterpreter";
import { sendServerCommand } from "../../src/serverCommands";
import { commandDependencies, fakeSession, settled } from "./fakeSession";

const PLACES = { home: "/home/me", workspaceFolder: "/work/project" } as const;
const VENV_PYTHON = "/home/me/.venv/bin/python";
/** The time limit in these tests: short, so that a wait that ends with it ends quickly. */
const LIMIT_MS = 50;

/** The Python extension, asked for its active environment: it answers when the test says. */
function pythonExtension() {
  const asked = { times: 0 };
  let answer: (environment: string) => void = () => undefined;
  const ask = () => {
    asked.times += 1;
    return new Promise<string | undefined>((resolve) => {
      answer = resolve;
    });
  };
  return {
    ask,
    asked,
    answer: (environment: string) => {
      answer(environment);
    },
  };
}

/** Lets the event loop turn until `done()`, a thousand turns at most. */
async function settledUntil(done: () => boolean) {
  for (let turn = 0; turn < 1000 && !done(); turn += 1) {
    await settled();
  }
}

/** The output's warnings. */
function outputLog() {
  const warnings: string[] = [];
  return { warnings, warn: (message: string) => warnings.push(message) };
}

describe("the interpreter of a start, with the Python extension asked in time", () => {
  it("is the Python extension's environment when it answers in time", async () => {
    const extension = pythonExtension();
    const log = outputLog();
    const chosen = chooseInterpreterInTime("", extension.ask, PLACES, log, LIMIT_MS);
    extension.answer(VENV_PYTHON);
    assert.deepEqual(await chosen, { command: VENV_PYTHON, source: "Python extension" });
    assert.deepEqual(log.warnings, []);
  });

  it(
    "is python3 when the Python extension does not answer in time, as the output says",
    { timeout: 5000 },
    async () => {
      const extension = pythonExtension(); // activating for good
      const log = outputLog();
      const chosen = await chooseInterpreterInTime("", extension.ask, PLACES, log, LIMIT_MS);
      assert.deepEqual(chosen, { command: DEFAULT_PYTHON, source: "default" });
      assert.equal(log.warnings.length, 1);
      assert.match(log.warnings[0] ?? "", /The Python extension did not answer within 0\.05 s/);
      assert.match(log.warnings[0] ?? "", new RegExp(`using ${DEFAULT_PYTHON} instead`));
    },
  );

  it("does not ask the Python extension when phi3.pythonPath names the Python", async () => {
    const extension = pythonExtension();
    const chosen = await chooseInterpreterInTime(
      "~/py/bin/python",
      extension.ask,
      PLACES,
      outputLog(),
      LIMIT_MS,
    );
    assert.deepEqual(chosen, { command: "/home/me/py/bin/python", source: "phi3.pythonPath" });
    assert.equal(extension.asked.times, 0);
  });
});

describe("a first start whose Python extension does not answer in time", () => {
  it(
    "goes on with python3, answers the command waiting for it, and moves once the answer comes",
    { timeout: 5000 },
    async () => {
      const extension = pythonExtension(); // activating, for longer than the limit
      const log = outputLog();
      const session = fakeSession({
        chooseInterpreter: (answeredLate) =>
          chooseInterpreterInTime("", extension.ask, PLACES, log, LIMIT_MS, answeredLate),
      });
      void session.lifecycle.startWhenNeeded(() => true);
      const answered = sendServerCommand(
        { command: SHOW_ARCHITECTURE_COMMAND, title: "Show Phi-3 architecture" },
        commandDependencies(session, () => Promise.resolve("LlamaForCausalLM")),
      );
      assert.equal(await answered, "LlamaForCausalLM");
      assert.deepEqual(session.starts, [DEFAULT_PYTHON]);
      assert.equal(log.warnings.length, 1);
      extension.answer(VENV_PYTHON); // where phi3_lsp is installed
      await settledUntil(() => session.starts.length === 2);
      assert.deepEqual(session.starts, [DEFAULT_PYTHON, VENV_PYTHON]);
    },
  );
});

describe("a server that runs, when the Python extension is slow to answer again", () => {
  /** A session started on the venv, whose Python extension then answers when the test says. */
  async function startedOnTheVenv(trusted = true) {
    const extension = pythonExtension();
    const log = outputLog();
    const session = fakeSession({
      trusted,
      chooseInterpreter: () => chooseInterpreterInTime("", extension.ask, PLACES, log, LIMIT_MS),
      interpreterIfAnswered: (answeredLate) =>
        interpreterAnsweredInTime("", extension.ask, PLACES, LIMIT_MS, answeredLate),
    });
    const started = session.lifecycle.startWhenNeeded(() => true);
    await settledUntil(() => extension.asked.times > 0);
    extension.answer(VENV_PYTHON);
    await started;
    assert.deepEqual(session.starts, [VENV_PYTHON]);
    return { extension, log, session };
  }

  it(
    "stays on its interpreter until the answer comes, then moves to it",
    { timeout: 5000 },
    async () => {
      const { extension, log, session } = await startedOnTheVenv();
      // The user picked another environment, and resolving it takes a while.
      await session.lifecycle.interpreterMayHaveChanged();
      assert.deepEqual(session.starts, [VENV_PYTHON], "no restart on python3");
      assert.ok(!session.calls.includes("stop"), "the server was not stopped");
      extension.answer("/home/me/other/bin/python");
      await settledUntil(() => session.starts.length === 2);
      assert.deepEqual(session.starts, [VENV_PYTHON, "/home/me/other/bin/python"]);
      assert.equal(extension.asked.times, 2, "the late answer is used, not asked for again");
      assert.deepEqual(log.warnings, []);
    },
  );

  it("keeps it when the workspace becomes trusted meanwhile", { timeout: 5000 }, async () => {
    const { extension, session } = await startedOnTheVenv(false);
    session.state.trusted = true;
    await session.lifecycle.workspaceTrusted();
    assert.deepEqual(session.starts, [VENV_PYTHON], "no restart on python3");
    assert.ok(session.calls.includes("reread settings"));
    extension.answer(VENV_PYTHON); // the same: nothing more to do
    await settled();
    await settled();
    assert.deepEqual(session.starts, [VENV_PYTHON]);
  });
});
