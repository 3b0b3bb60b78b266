import assert from "node:assert/strict";
import { describe, it, type TestContext } from "node:test";
import { SHOW_ARCHITECTURE_COMMAND } from "../../src/protocol";
import {
  chooseInterpreterInTime,
  interpreterAnsweredInTime,
  PYTHON_EXTENSION_ANSWER_MS,
  PythonEnvironmentQuestion,
} from "../../src/pythonExtensionAnswer";
import { DEFAULT_PYTHON } from "../../src/pythonInterpreter";
import { sendServerCommand } from "../../src/serverCommands";
import { commandDependencies, fakeSession, settled } from "./fakeSession";

const PLACES = { home: "/home/me", workspaceFolder: "/work/project" } as const;
const VENV_PYTHON = "/home/me/.venv/bin/python";
const OTHER_PYTHON = "/home/me/other/bin/python";
const THIRD_PYTHON = "/home/me/third/bin/python";
/** The time limit in these tests: short, so that a wait that ends with it ends quickly. */
const LIMIT_MS = 50;

/**
 * The Python extension, asked for its active environment: it answers (or fails to) when the
 * test says. Its `question` waits `limitMs` for an answer.
 */
function pythonExtension(limitMs = LIMIT_MS) {
  const asked = { times: 0 };
  let answer: (environment: string) => void = () => undefined;
  let refuse: (error: Error) => void = () => undefined;
  const ask = () => {
    asked.times += 1;
    return new Promise<string | undefined>((resolve, reject) => {
      answer = resolve;
      refuse = reject;
    });
  };
  return {
    question: new PythonEnvironmentQuestion(ask, limitMs),
    asked,
    answer: (environment: string) => {
      answer(environment);
    },
    refuse: () => {
      refuse(new Error("the Python extension failed to activate"));
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
    const chosen = chooseInterpreterInTime("", extension.question, PLACES, log);
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
      const chosen = await chooseInterpreterInTime("", extension.question, PLACES, log);
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
      extension.question,
      PLACES,
      outputLog(),
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
          chooseInterpreterInTime("", extension.question, PLACES, log, answeredLate),
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
      chooseInterpreter: () => chooseInterpreterInTime("", extension.question, PLACES, log),
      interpreterIfAnswered: (answeredLate) =>
        interpreterAnsweredInTime("", extension.question, PLACES, answeredLate),
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

describe("restarts while the Python extension has still not answered the first start", () => {
  /**
   * A session whose first start went on with python3 once the Python extension had not answered
   * in 10 s. The clock is the test's: a wait for another 10 s would never end by itself.
   */
  async function startedOnPython3(t: TestContext) {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const extension = pythonExtension(PYTHON_EXTENSION_ANSWER_MS); // stuck activating
    const log = outputLog();
    const settings = { pythonPath: "" };
    const session = fakeSession({
      chooseInterpreter: (answeredLate) =>
        chooseInterpreterInTime(settings.pythonPath, extension.question, PLACES, log, answeredLate),
      interpreterIfAnswered: (answeredLate) =>
        interpreterAnsweredInTime(settings.pythonPath, extension.question, PLACES, answeredLate),
    });
    const started = session.lifecycle.startWhenNeeded(() => true);
    await settledUntil(() => extension.asked.times > 0);
    t.mock.timers.tick(PYTHON_EXTENSION_ANSWER_MS);
    await started;
    assert.deepEqual(session.starts, [DEFAULT_PYTHON]);
    return { extension, log, settings, session };
  }

  /** Restarts the server, asserting that the restart ends while the clock stands still. */
  async function restartedAtOnce(session: ReturnType<typeof fakeSession>) {
    let restarted = false;
    void session.lifecycle.restart().then(() => {
      restarted = true;
    });
    await settledUntil(() => restarted);
    assert.ok(restarted, "the restart waits for the Python extension again");
  }

  it(
    "each restart goes on with python3 at once, and the answer moves the server once",
    { timeout: 5000 },
    async (t) => {
      const { extension, log, session } = await startedOnPython3(t);
      await restartedAtOnce(session);
      await restartedAtOnce(session);
      assert.deepEqual(session.starts, [DEFAULT_PYTHON, DEFAULT_PYTHON, DEFAULT_PYTHON]);
      assert.equal(extension.asked.times, 1, "the question still pending is not asked again");
      assert.equal(log.warnings.length, 3, "each start on python3 says so");
      assert.match(log.warnings[2] ?? "", /The Python extension has still not answered/);
      assert.match(log.warnings[2] ?? "", new RegExp(`using ${DEFAULT_PYTHON} instead`));
      extension.answer(OTHER_PYTHON); // read before the restarts
      await settledUntil(() => extension.asked.times === 2);
      assert.equal(extension.asked.times, 2, "asked again for the last restart");
      extension.answer(VENV_PYTHON);
      await settledUntil(() => session.starts.length === 4);
      await settledUntil(() => session.starts.length > 4); // a second move, if any
      assert.deepEqual(session.starts.slice(3), [VENV_PYTHON]);
    },
  );

  it(
    "once the answer has come, a restart asks the Python extension again",
    { timeout: 5000 },
    async (t) => {
      const { extension, log, session } = await startedOnPython3(t);
      await restartedAtOnce(session);
      extension.answer(VENV_PYTHON);
      await settledUntil(() => extension.asked.times === 2); // for the restart that took it over
      extension.answer(VENV_PYTHON);
      await settledUntil(() => session.starts.length === 3);
      assert.equal(session.starts[2], VENV_PYTHON);
      // The user picked another environment meanwhile, and restarts.
      const restarted = session.lifecycle.restart();
      await settledUntil(() => extension.asked.times === 3);
      extension.answer("/home/me/other/bin/python");
      await restarted;
      assert.deepEqual(session.starts.slice(3), ["/home/me/other/bin/python"]);
      assert.equal(log.warnings.length, 2, "the answer came in time: nothing more to say");
    },
  );

  it(
    "once the question has failed, a restart asks the Python extension again",
    { timeout: 5000 },
    async (t) => {
      const { extension, session } = await startedOnPython3(t);
      await restartedAtOnce(session);
      extension.refuse();
      const restarted = session.lifecycle.restart();
      await settledUntil(() => extension.asked.times === 2);
      extension.answer(VENV_PYTHON);
      await restarted;
      assert.deepEqual(session.starts, [DEFAULT_PYTHON, DEFAULT_PYTHON, VENV_PYTHON]);
    },
  );

  it(
    "a check of the interpreter keeps the server at once, and the answer moves it",
    { timeout: 5000 },
    async (t) => {
      const { extension, session } = await startedOnPython3(t);
      let checked = false;
      void session.lifecycle.interpreterMayHaveChanged().then(() => {
        checked = true;
      });
      await settledUntil(() => checked);
      assert.ok(checked, "the check waits for the Python extension again");
      assert.deepEqual(session.starts, [DEFAULT_PYTHON], "the server is kept");
      extension.answer(VENV_PYTHON); // read before the check
      await settledUntil(() => extension.asked.times === 2);
      extension.answer(VENV_PYTHON); // read after it
      await settledUntil(() => session.starts.length === 2);
      await settledUntil(() => session.starts.length > 2); // a second move, if any
      assert.deepEqual(session.starts, [DEFAULT_PYTHON, VENV_PYTHON]);
    },
  );

  it(
    "the answer does not move a server that phi3.pythonPath has moved since",
    { timeout: 5000 },
    async (t) => {
      const { extension, settings, session } = await startedOnPython3(t);
      settings.pythonPath = "/opt/py/bin/python";
      await session.lifecycle.interpreterMayHaveChanged();
      assert.deepEqual(session.starts, [DEFAULT_PYTHON, "/opt/py/bin/python"]);
      extension.answer(VENV_PYTHON);
      await settledUntil(() => session.starts.length > 2);
      assert.deepEqual(session.starts, [DEFAULT_PYTHON, "/opt/py/bin/python"]);
    },
  );
});

describe("a check that takes over an answer asked for before the user picked again", () => {
  /**
   * A session started on the venv; the user then picked OTHER_PYTHON, whose resolve has not
   * ended in 10 s (the check keeps the server), and then THIRD_PYTHON, whose check takes over
   * the question still pending. The clock is the test's.
   */
  async function pickedTwiceWhileSlow(t: TestContext) {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const extension = pythonExtension(PYTHON_EXTENSION_ANSWER_MS);
    const settings = { pythonPath: "" };
    const session = fakeSession({
      chooseInterpreter: (answeredLate) =>
        chooseInterpreterInTime(
          settings.pythonPath,
          extension.question,
          PLACES,
          outputLog(),
          answeredLate,
        ),
      interpreterIfAnswered: (answeredLate) =>
        interpreterAnsweredInTime(settings.pythonPath, extension.question, PLACES, answeredLate),
    });
    const started = session.lifecycle.startWhenNeeded(() => true);
    await settledUntil(() => extension.asked.times === 1);
    extension.answer(VENV_PYTHON);
    await started;
    const firstPick = session.lifecycle.interpreterMayHaveChanged();
    await settledUntil(() => extension.asked.times === 2);
    t.mock.timers.tick(PYTHON_EXTENSION_ANSWER_MS);
    await firstPick;
    await checkedAtOnce(session);
    assert.equal(extension.asked.times, 2, "the question still pending is not asked again");
    assert.deepEqual(session.starts, [VENV_PYTHON]);
    return { extension, settings, session };
  }

  /** Checks the interpreter, asserting that the check ends while the clock stands still. */
  async function checkedAtOnce(session: ReturnType<typeof fakeSession>) {
    let checked = false;
    void session.lifecycle.interpreterMayHaveChanged().then(() => {
      checked = true;
    });
    await settledUntil(() => checked);
    assert.ok(checked, "the check waits for the Python extension again");
  }

  /** The answer read before the second pick, which names the first; then asked again. */
  async function staleAnswerCame(extension: ReturnType<typeof pythonExtension>) {
    extension.answer(OTHER_PYTHON);
    await settledUntil(() => extension.asked.times === 3);
    assert.equal(extension.asked.times, 3, "asked again for the check that took the answer over");
  }

  it(
    "moves the server once, to the environment the question asked again names",
    { timeout: 5000 },
    async (t) => {
      const { extension, session } = await pickedTwiceWhileSlow(t);
      extension.answer(OTHER_PYTHON); // read before the second pick
      await settledUntil(() => session.starts.length > 1 || extension.asked.times === 3);
      await settledUntil(() => session.starts.length > 1); // a move, if any
      assert.deepEqual(session.starts, [VENV_PYTHON], "not moved to the environment picked first");
      assert.equal(extension.asked.times, 3, "asked again for the check that took the answer over");
      extension.answer(THIRD_PYTHON);
      await settledUntil(() => session.starts.length === 2);
      await settledUntil(() => session.starts.length > 2); // a second move, if any
      assert.deepEqual(session.starts, [VENV_PYTHON, THIRD_PYTHON]);
      assert.equal(extension.asked.times, 3, "not asked once more");
    },
  );

  it(
    "moves it when the question asked again is answered late too, asking no more meanwhile",
    { timeout: 5000 },
    async (t) => {
      const { extension, session } = await pickedTwiceWhileSlow(t);
      await staleAnswerCame(extension);
      t.mock.timers.tick(PYTHON_EXTENSION_ANSWER_MS);
      t.mock.timers.tick(PYTHON_EXTENSION_ANSWER_MS);
      await settledUntil(() => session.starts.length > 1);
      assert.equal(extension.asked.times, 3, "a stuck extension is not asked in a loop");
      extension.answer(THIRD_PYTHON);
      await settledUntil(() => session.starts.length === 2);
      assert.deepEqual(session.starts, [VENV_PYTHON, THIRD_PYTHON]);
    },
  );

  it(
    "a check while the question is asked again takes it over in turn",
    { timeout: 5000 },
    async (t) => {
      const { extension, session } = await pickedTwiceWhileSlow(t);
      await staleAnswerCame(extension);
      const fourth = "/home/me/fourth/bin/python";
      await checkedAtOnce(session); // the user picked a fourth environment
      assert.equal(extension.asked.times, 3);
      extension.answer(THIRD_PYTHON);
      await settledUntil(() => extension.asked.times === 4);
      assert.equal(extension.asked.times, 4, "asked again for the latest check");
      extension.answer(fourth);
      await settledUntil(() => session.starts.length === 2);
      await settledUntil(() => session.starts.length > 2); // a second move, if any
      assert.deepEqual(session.starts, [VENV_PYTHON, fourth]);
    },
  );

  it(
    "keeps the server when the question asked again fails, and the next check asks anew",
    { timeout: 5000 },
    async (t) => {
      const { extension, session } = await pickedTwiceWhileSlow(t);
      await staleAnswerCame(extension);
      extension.refuse();
      await settledUntil(() => session.starts.length > 1);
      assert.deepEqual(session.starts, [VENV_PYTHON]);
      const checked = session.lifecycle.interpreterMayHaveChanged();
      await settledUntil(() => extension.asked.times === 4);
      extension.answer(THIRD_PYTHON);
      await checked;
      assert.deepEqual(session.starts, [VENV_PYTHON, THIRD_PYTHON]);
    },
  );

  it(
    "moves it nowhere when phi3.pythonPath is set while the question is asked again",
    { timeout: 5000 },
    async (t) => {
      const { extension, settings, session } = await pickedTwiceWhileSlow(t);
      await staleAnswerCame(extension);
      settings.pythonPath = "/opt/py/bin/python";
      await session.lifecycle.interpreterMayHaveChanged();
      assert.deepEqual(session.starts, [VENV_PYTHON, "/opt/py/bin/python"]);
      extension.answer(THIRD_PYTHON);
      await settledUntil(() => session.starts.length > 2);
      assert.deepEqual(session.starts, [VENV_PYTHON, "/opt/py/bin/python"]);
    },
  );
});
