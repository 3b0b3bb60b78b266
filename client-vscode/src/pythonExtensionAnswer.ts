/**
 * A start's interpreter, with a time limit on the Python extension's answer. That extension
 * answers only once it has activated, and one that never does (a broken install, a slow remote)
 * would hold the start, and every command waiting for it, for good.
 *
 * Plain module (no VS Code API): the question to the Python extension is passed in.
 */

import { chooseInterpreter, type Interpreter, type PathPlaces } from "./pythonInterpreter";
import { settlesWithin } from "./timeouts";

/**
 * How long a start waits for the Python extension's environment. Activating on startup, as this
 * extension does, it answers within a second or two, a few more on a slow disk. A shorter wait
 * would start on `python3`, which fails where only its environment has phi3_lsp; a longer one
 * would hold the start, and the commands waiting for it, for an answer unlikely to come.
 */
export const PYTHON_EXTENSION_ANSWER_MS = 10_000;

/** What the Python extension said when asked for its environment. */
export type EnvironmentAnswer =
  /** Its environment, within the time limit (undefined: it has none to give). */
  | { readonly kind: "answered"; readonly environment: string | undefined }
  /** Nothing within the time limit. */
  | { readonly kind: "late" }
  /** Nothing yet to a question asked before, which was not waited for again. */
  | { readonly kind: "stillPending" };

/** Who gets the answer of a question that was not answered in time. */
interface Recipient {
  readonly answeredLate: (environment: string | undefined) => void;
  /**
   * It took over a question asked before it came, whose answer may predate what it wants to
   * know (an environment picked meanwhile): it gets the answer of a question asked after that.
   */
  readonly tookOver: boolean;
}

/** A question not yet answered, and who gets its answer, if anyone. */
interface OpenQuestion {
  recipient?: Recipient;
}

/**
 * The question to the Python extension for its active environment, one at a time. While one
 * has no answer, the extension is not asked again, nor waited for again: its activation is
 * stuck, and each restart would wait out the limit anew. Once answered, it is asked afresh
 * (the environment may have changed since).
 */
export class PythonEnvironmentQuestion {
  /** The question not yet answered, and who gets its answer; undefined when none is pending. */
  private pending: OpenQuestion | undefined;

  constructor(
    private readonly askPythonExtension: () => Promise<string | undefined>,
    readonly limitMs = PYTHON_EXTENSION_ANSWER_MS,
  ) {}

  /**
   * The environment answered within `limitMs`, or at once "stillPending" when the question
   * asked before has no answer yet. Without an answer, `answeredLate` is called with it once it
   * comes, unless a later call (or `forgetLateAnswer`) has taken its place since: one answer
   * moves the server once. After "stillPending", that answer was asked for before this call,
   * and may name an environment the user has changed since: once it comes, the extension is
   * asked again, and `answeredLate` gets this second answer instead, whenever it comes, unless
   * a later call has taken it over in turn. A question that fails has no answer, and the next
   * one asks anew.
   */
  async environmentInTime(
    answeredLate: (environment: string | undefined) => void,
  ): Promise<EnvironmentAnswer> {
    if (this.pending !== undefined) {
      this.pending.recipient = { answeredLate, tookOver: true };
      return { kind: "stillPending" };
    }
    const question: OpenQuestion = {};
    const answer = this.ask(question);
    const settled = answer.then(
      () => undefined,
      () => undefined,
    );
    if (!(await settlesWithin(settled, this.limitMs))) {
      question.recipient ??= { answeredLate, tookOver: false };
      return { kind: "late" };
    }
    return { kind: "answered", environment: await answer };
  }

  /** The answer still pending, if any, goes to no one: phi3.pythonPath names the Python now. */
  forgetLateAnswer(): void {
    if (this.pending !== undefined) {
      this.pending.recipient = undefined;
    }
  }

  /** Asks the Python extension, with `question` pending until it answers or fails. */
  private ask(question: OpenQuestion): Promise<string | undefined> {
    this.pending = question;
    const answer = this.askPythonExtension();
    // First in line: by the time a wait for the answer hears of it, the question is closed.
    void answer.then(
      (environment) => {
        this.pending = undefined;
        const recipient = question.recipient;
        if (recipient?.tookOver === true) {
          // Asked once more, for this recipient only: a stuck extension is not asked in a loop.
          void this.ask({ recipient: { ...recipient, tookOver: false } });
        } else {
          recipient?.answeredLate(environment);
        }
      },
      () => {
        this.pending = undefined;
      },
    );
    return answer;
  }
}

/** The interpreter chosen now, or how the Python extension failed to answer in time. */
async function interpreterOrLate(
  pythonPath: string,
  question: PythonEnvironmentQuestion,
  places: PathPlaces,
  answeredLate: (interpreter: Interpreter) => void,
): Promise<Interpreter | "late" | "stillPending"> {
  if (pythonPath !== "") {
    question.forgetLateAnswer();
    return chooseInterpreter(pythonPath, undefined, places);
  }
  const answer = await question.environmentInTime((environment) => {
    answeredLate(chooseInterpreter(pythonPath, environment, places));
  });
  return answer.kind === "answered"
    ? chooseInterpreter(pythonPath, answer.environment, places)
    : answer.kind;
}

/**
 * The interpreter phi3.pythonPath names, else the active environment the Python extension
 * answers within the question's limit; undefined when it has not answered by then (or has not
 * answered a question asked before), and `answeredLate` is called with its answer once it has.
 */
export async function interpreterAnsweredInTime(
  pythonPath: string,
  question: PythonEnvironmentQuestion,
  places: PathPlaces,
  answeredLate: (interpreter: Interpreter) => void = () => undefined,
): Promise<Interpreter | undefined> {
  const chosen = await interpreterOrLate(pythonPath, question, places, answeredLate);
  return typeof chosen === "string" ? undefined : chosen;
}

/**
 * The interpreter of a start: as `interpreterAnsweredInTime`, else the default, which `log` says
 * is used instead; `answeredLate` is then called with the answer once it comes.
 */
export async function chooseInterpreterInTime(
  pythonPath: string,
  question: PythonEnvironmentQuestion,
  places: PathPlaces,
  log: { warn(message: string): void },
  answeredLate: (interpreter: Interpreter) => void = () => undefined,
): Promise<Interpreter> {
  const chosen = await interpreterOrLate(pythonPath, question, places, answeredLate);
  if (typeof chosen !== "string") {
    return chosen;
  }
  const instead = chooseInterpreter(pythonPath, undefined, places);
  const unanswered =
    chosen === "late"
      ? `did not answer within ${question.limitMs / 1000} s when asked for its environment`
      : "has still not answered when asked for its environment by an earlier start";
  log.warn(
    `The Python extension ${unanswered}; using ${instead.command} instead, until it answers. ` +
      "Set phi3.pythonPath to choose the Python without it.",
  );
  return instead;
}
