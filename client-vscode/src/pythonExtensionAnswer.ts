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

/**
 * The interpreter phi3.pythonPath names, else the active environment `askPythonExtension`
 * answers within `limitMs`; undefined when it has not answered by then, and `answeredLate` is
 * called with its answer once it has.
 */
export async function interpreterAnsweredInTime(
  pythonPath: string,
  askPythonExtension: () => Promise<string | undefined>,
  places: PathPlaces,
  limitMs = PYTHON_EXTENSION_ANSWER_MS,
  answeredLate: (interpreter: Interpreter) => void = () => undefined,
): Promise<Interpreter | undefined> {
  if (pythonPath !== "") {
    return chooseInterpreter(pythonPath, undefined, places);
  }
  const answer = askPythonExtension();
  const settled = answer.then(
    () => undefined,
    () => undefined,
  );
  if (!(await settlesWithin(settled, limitMs))) {
    answer.then(
      (environment) => {
        answeredLate(chooseInterpreter(pythonPath, environment, places));
      },
      () => undefined,
    );
    return undefined;
  }
  return chooseInterpreter(pythonPath, await answer, places);
}

/**
 * The interpreter of a start: as `interpreterAnsweredInTime`, else the default, which `log` says
 * is used instead; `answeredLate` is then called with the answer once it comes.
 */
export async function chooseInterpreterInTime(
  pythonPath: string,
  askPythonExtension: () => Promise<string | undefined>,
  places: PathPlaces,
  log: { warn(message: string): void },
  limitMs = PYTHON_EXTENSION_ANSWER_MS,
  answeredLate: (interpreter: Interpreter) => void = () => undefined,
): Promise<Interpreter> {
  const answered = await interpreterAnsweredInTime(
    pythonPath,
    askPythonExtension,
    places,
    limitMs,
    answeredLate,
  );
  if (answered !== undefined) {
    return answered;
  }
  const instead = chooseInterpreter(pythonPath, undefined, places);
  log.warn(
    `The Python extension did not answer within ${limitMs / 1000} s when asked for its ` +
      `environment; using ${instead.command} instead. Set phi3.pythonPath to choose the Python ` +
      "without it.",
  );
  return instead;
}
