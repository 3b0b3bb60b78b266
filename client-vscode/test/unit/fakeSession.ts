import { RequestCancellation } from "../../src/cancellation";
import type { CommandDependencies } from "../../src/serverCommands";
import {
  type ChosenInterpreter,
  ServerLifecycle,
  type ServerSteps,
} from "../../src/serverLifecycle";
import type { ShowWait } from "../../src/serverWait";

export const settled = () => new Promise((resolve) => setImmediate(resolve));

/**
 * A session that records the starts and stops asked of it. Its starts take a few turns of the
 * event loop, or, while `holdStarts` is on, until `finishStart` (so that events can come during
 * one) or until given up, as a Python that never answers the handshake is; `startsFail` makes
 * them end without a server, as a missing phi3_lsp does. Its interpreter is `state.python`,
 * once `state.pythonExtensionReady`, unless `options.chooseInterpreter` chooses it for a start,
 * or `options.interpreterIfAnswered` for a server that may run.
 */
export function fakeSession(
  options: {
    python?: string;
    trusted?: boolean;
    chooseInterpreter?: (
      answeredLate: (interpreter: ChosenInterpreter) => void,
    ) => Promise<ChosenInterpreter>;
    interpreterIfAnswered?: (
      answeredLate: (interpreter: ChosenInterpreter) => void,
    ) => Promise<ChosenInterpreter | undefined>;
  } = {},
) {
  const state = {
    python: options.python ?? "/usr/bin/python3",
    trusted: options.trusted ?? true,
    /** A server process runs, or is being started. */
    alive: false,
    /** The server has finished its handshake. */
    running: false,
    startsFail: false,
    holdStarts: false,
    waitingForDocument: false,
    /** Awaited before the interpreter is chosen: the Python extension's API, once it is there. */
    pythonExtensionReady: Promise.resolve(),
    /** Called as the interpreter is asked for, before the answer. */
    whileChoosing: (): void => undefined,
    /** Called as a server that is alive stops: what it has not answered goes unanswered. */
    whileStopping: (): void => undefined,
  };
  const starts: string[] = [];
  const calls: string[] = [];
  /** Ends a held start: given up (true) or with its handshake done (false). */
  const heldStarts: ((abandoned: boolean) => void)[] = [];
  const pythonExtensionAnswer = async (): Promise<ChosenInterpreter> => {
    await state.pythonExtensionReady;
    await settled(); // the Python extension answers a moment later
    return { command: state.python };
  };
  const steps: ServerSteps<ChosenInterpreter> = {
    chooseInterpreter: (answeredLate) => {
      calls.push("choose");
      state.whileChoosing();
      return options.chooseInterpreter?.(answeredLate) ?? pythonExtensionAnswer();
    },
    interpreterIfAnswered: (answeredLate) => {
      calls.push("choose");
      state.whileChoosing();
      return options.interpreterIfAnswered?.(answeredLate) ?? pythonExtensionAnswer();
    },
    starting: () => undefined,
    start: async (interpreter) => {
      starts.push(interpreter.command);
      calls.push(`start ${interpreter.command}`);
      state.alive = true;
      state.running = false;
      let abandoned = false;
      if (state.holdStarts) {
        abandoned = await new Promise<boolean>((resolve) => heldStarts.push(resolve));
      } else {
        await settled();
      }
      state.alive = !state.startsFail && !abandoned;
      state.running = state.alive;
    },
    stop: () => {
      if (state.alive) {
        calls.push("stop");
        state.whileStopping();
      }
      state.alive = false;
      state.running = false;
      return Promise.resolve();
    },
    abandonStart: () => {
      calls.push("abandon start");
      heldStarts.shift()?.(true);
    },
    isAlive: () => state.alive,
    isRunning: () => state.running,
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
    heldStarts.shift()?.(false);
  };
  return { state, starts, calls, lifecycle, finishStart };
}

/** A wait shown where no one cancels it. */
const uncancelledWait: ShowWait = (wait) => wait(new RequestCancellation().token);

/**
 * What a command needs of `session` (serverCommands.ts): its server answers with `answer`, and
 * `startWait` shows the wait for a start.
 */
export function commandDependencies(
  { lifecycle, state }: ReturnType<typeof fakeSession>,
  answer: () => Promise<unknown>,
  startWait: ShowWait = uncancelledWait,
): CommandDependencies {
  return {
    lifecycle,
    server: () => ({
      isRunning: () => state.running,
      executeCommand: answer,
    }),
    views: {
      startWait: () => startWait,
      slowAnswer: () => uncancelledWait,
      working: (_progress, reply) => reply,
    },
  };
}
