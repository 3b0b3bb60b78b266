/**
 * When the language server starts, restarts and stops; how it does is serverSession.ts's job.
 *
 * Events come in bursts (a folder's files opening at once, the Python extension reporting its
 * environment while it activates), and every start loads a model: seconds of CPU and gigabytes
 * of memory. So each operation waits for the ones before it, and decides what to do only when
 * its turn comes, on the state they left.
 *
 * An empty window waits for its first file or untitled document (firstStart.ts). That document,
 * or a command that needs the server, starts it once; those that follow find it started. Events
 * that may change the interpreter (the Python extension's environment, phi3.pythonPath,
 * workspace trust) change nothing before the first start, which chooses it itself. Of the
 * environment and phi3.pythonPath, those before a start's choice change nothing either, and
 * those during a start restart only onto another interpreter.
 *
 * A start may never end (a Python that never answers the handshake). A restart or a stop,
 * which the user or the window asks for, gives it up instead of waiting behind it; a command
 * that waits for it shows its wait and may cancel it (serverWait.ts).
 *
 * Plain module (no VS Code API).
 */

/** An interpreter, as far as the decisions here need one. */
export interface ChosenInterpreter {
  readonly command: string;
}

/** The work the decisions here call for, done by the session. */
export interface ServerSteps<I extends ChosenInterpreter> {
  /**
   * The interpreter that phi3.pythonPath or the Python extension chooses now, for a start; where
   * the Python extension did not answer in time, the default, and then `answeredLate` is called
   * with the interpreter it names once it has.
   */
  chooseInterpreter(answeredLate: (interpreter: I) => void): Promise<I>;
  /**
   * The interpreter chosen now, as `chooseInterpreter`, or undefined when the Python extension
   * did not answer in time (a server keeps its own rather than move to the default), and then
   * `answeredLate` is called with the interpreter it names once it has.
   */
  interpreterIfAnswered(answeredLate: (interpreter: I) => void): Promise<I | undefined>;
  /** Shows that a start has begun (the interpreter is chosen next). */
  starting(): void;
  /**
   * Starts a server on `interpreter`, after stopping any still there; resolves once it runs, or
   * once it has failed and the user has been told why.
   */
  start(interpreter: I): Promise<void>;
  /** Stops the server, if there is one. */
  stop(): Promise<void>;
  /**
   * Stops the server whose start is under way, so that `start` ends: a Python that never
   * answers the handshake would hold every operation after it, a restart's or a stop's too.
   */
  abandonStart(): void;
  /** A server process runs, or is being started. */
  isAlive(): boolean;
  /** The server has finished its handshake and runs. */
  isRunning(): boolean;
  /** Has the running server read its settings again. */
  rereadSettings(): Promise<void>;
  isTrusted(): boolean;
  /** Calls `documentOpened` for each file or untitled document that opens, until disposed. */
  waitForDocument(): { dispose(): void };
  readonly log: { info(message: string): void; error(message: string): void };
}

type Phase =
  /** Activation has not yet looked at the window. */
  | "undecided"
  /** An empty window: no server until a document opens or a command needs one. */
  | "waiting"
  /** A start has begun, whether or not the server ran or still runs. */
  | "started"
  | "disposed";

/** An interpreter, and how many interpreter events had come when it was chosen. */
interface Choice<I> {
  readonly interpreter: I;
  readonly eventsBefore: number;
}

function stopSignal(): { readonly promise: Promise<void>; ended(): void } {
  let ended = (): void => undefined;
  const promise = new Promise<void>((resolve) => {
    ended = resolve;
  });
  return { promise, ended };
}

export class ServerLifecycle<I extends ChosenInterpreter> {
  private queue: Promise<void> = Promise.resolve();
  private phase: Phase = "undecided";
  private waiting: { dispose(): void } | undefined;
  /** The interpreter of the last start, whether or not the server ran on it. */
  private startedWith: string | undefined;
  /** Whether the workspace was trusted at the last start (it read the restricted settings). */
  private startedTrusted = false;
  /** Events that may change the interpreter, counted as they come. */
  private interpreterEvents = 0;
  /** How many of them had come when the last start chose its interpreter. */
  private eventsBeforeLastStart = 0;
  /** Starts that have ended, with a running server or not. */
  private startsEnded = 0;
  /** Operations queued or running. */
  private operationsPending = 0;
  /** `steps.start` has been called and has not returned. */
  private startUnderWay = false;
  /** Resolves as the stop under way, or the next one, ends. */
  private stopEnded = stopSignal();

  constructor(private readonly steps: ServerSteps<I>) {}

  /** At activation: starts if `needsServerNow()`, else waits for a document. */
  startWhenNeeded(needsServerNow: () => boolean): Promise<void> {
    return this.enqueue(async () => {
      if (this.phase !== "undecided") {
        return; // a command has started it already
      }
      if (needsServerNow()) {
        await this.startNow();
        return;
      }
      this.phase = "waiting";
      this.waiting = this.steps.waitForDocument();
    });
  }

  /** A file or untitled document opened: the first start of a waiting window. */
  documentOpened(): Promise<void> {
    return this.enqueue(async () => {
      if (this.phase === "waiting") {
        await this.startNow();
      }
    });
  }

  /**
   * Whether a command that needs the server now would wait: a start (or another operation that
   * may start one) is queued or under way, or none has begun yet. Otherwise the server runs,
   * or it is down and only a restart brings it back.
   */
  get commandMustWait(): boolean {
    return this.operationsPending > 0 || this.phase === "undecided" || this.phase === "waiting";
  }

  /**
   * A command needs the server: starts it if no start has begun, and waits for any start
   * before. True when a start ended meanwhile: if the server does not run, it has said why.
   */
  async serverNeeded(): Promise<boolean> {
    const ended = this.startsEnded;
    await this.enqueue(async () => {
      if (this.phase === "undecided" || this.phase === "waiting") {
        await this.startNow();
      }
    });
    return this.startsEnded !== ended;
  }

  /**
   * Stops the server (if any) and starts a fresh one: the user asked. A start under way is
   * given up at once: it may be one that never ends.
   */
  restart(): Promise<void> {
    this.abandonStartUnderWay();
    return this.enqueue(async () => {
      if (this.phase !== "disposed") {
        await this.restartNow();
      }
    });
  }

  /**
   * The interpreter may have changed: restarts if the one chosen now is not the server's. The
   * Python extension reports changes that leave ours as it was (another workspace folder's, the
   * same path chosen again), a change of phi3.pythonPath may leave it too (a workspace value that
   * Restricted Mode ignores), and a restart reloads the model.
   */
  interpreterMayHaveChanged(): Promise<void> {
    return this.checkInterpreter();
  }

  /** As `interpreterMayHaveChanged`, with the interpreter `answered` late, if given. */
  private checkInterpreter(answered?: Choice<I>): Promise<void> {
    this.interpreterEvents += 1;
    const event = this.interpreterEvents;
    const startsEndedBefore = this.startsEnded;
    return this.enqueue(async () => {
      if (this.phase !== "started" || event <= this.eventsBeforeLastStart) {
        return; // the start chooses, or chose, after this event
      }
      const choice = answered ?? (await this.chooseAgain());
      if (choice === undefined) {
        return; // checked again once the Python extension answers
      }
      // A server that is down is tried again on the same interpreter only for an event after
      // its start ended (the user chose it again, say after installing phi3_lsp there): during
      // the start, the same answer is one that start had, and would fail the same way.
      const triedSince = this.startsEnded !== startsEndedBefore;
      if (choice.interpreter.command === this.startedWith && (this.steps.isAlive() || triedSince)) {
        return;
      }
      this.steps.log.info(`Python is now ${choice.interpreter.command}; restarting the server.`);
      await this.restartNow(choice);
    });
  }

  /**
   * The workspace is trusted now: the workspace's values of the restricted settings apply, and
   * an interpreter inside it may run. A server still on the same interpreter re-reads its
   * settings (reloading the model only if phi3.model changed); any other case starts anew.
   */
  workspaceTrusted(): Promise<void> {
    return this.enqueue(async () => {
      if (this.phase !== "started") {
        return; // not started: the start will read the workspace's settings
      }
      const choice = await this.chooseAgain();
      const running = this.steps.isRunning();
      // Started since the trust (a setting change VS Code announced first), or on the same
      // Python (or one the Python extension did not name in time): no new start, which would
      // say a failure of the first one again.
      const sameInterpreter =
        choice === undefined || choice.interpreter.command === this.startedWith;
      if (this.startedTrusted || (running && sameInterpreter)) {
        if (running) {
          await this.steps.rereadSettings();
        }
        return;
      }
      this.steps.log.info("The workspace is trusted now; starting the server.");
      await this.restartNow(choice);
    });
  }

  /** Stops the server, giving up a start under way. */
  stop(): Promise<void> {
    this.abandonStartUnderWay();
    return this.enqueue(() => this.stopServer());
  }

  /**
   * Resolves once the server that runs now has been stopped (the stop under way or the next
   * one has ended), whether its shutdown was answered in time or not.
   */
  nextStopEnded(): Promise<void> {
    return this.stopEnded.promise;
  }

  /** Starts nothing more, and stops the server. */
  dispose(): Promise<void> {
    this.phase = "disposed";
    this.waiting?.dispose();
    this.waiting = undefined;
    return this.stop();
  }

  private abandonStartUnderWay(): void {
    if (this.startUnderWay) {
      this.steps.abandonStart();
    }
  }

  private enqueue(operation: () => Promise<void>): Promise<void> {
    // Operations never overlap, and one failure (logged here) does not block the ones after
    // it; the returned promise never rejects, so callers may fire and forget.
    this.operationsPending += 1;
    this.queue = this.queue
      .then(operation)
      .catch((error: unknown) => {
        this.steps.log.error(`Phi-3 server: ${String(error)}`);
      })
      .finally(() => {
        this.operationsPending -= 1;
      });
    return this.queue;
  }

  private async choose(): Promise<Choice<I>> {
    // Taken before asking: the answer reflects at least every event counted so far.
    const eventsBefore = this.interpreterEvents;
    const interpreter = await this.steps.chooseInterpreter(this.checkLateAnswer(eventsBefore));
    return { interpreter, eventsBefore };
  }

  /**
   * As `choose`, for a server that may run: undefined when the answer did not come in time, and
   * the interpreter is checked again once it has (the user's pick of an environment may take a
   * while to resolve).
   */
  private async chooseAgain(): Promise<Choice<I> | undefined> {
    const eventsBefore = this.interpreterEvents;
    const interpreter = await this.steps.interpreterIfAnswered(this.checkLateAnswer(eventsBefore));
    if (interpreter === undefined) {
      this.steps.log.info(
        "The Python extension did not answer in time; the server stays as it is until it does.",
      );
      return undefined;
    }
    return { interpreter, eventsBefore };
  }

  /** Checks the interpreter the Python extension names late, asked after `eventsBefore`. */
  private checkLateAnswer(eventsBefore: number): (interpreter: I) => void {
    return (interpreter) => {
      void this.checkInterpreter({ interpreter, eventsBefore });
    };
  }

  private async restartNow(choice?: Choice<I>): Promise<void> {
    await this.stopServer();
    await this.startNow(choice);
  }

  private async stopServer(): Promise<void> {
    try {
      await this.steps.stop();
    } finally {
      this.stopEnded.ended();
      this.stopEnded = stopSignal();
    }
  }

  /** Starts on `choice`, or on the interpreter chosen now; nothing once disposed. */
  private async startNow(choice?: Choice<I>): Promise<void> {
    // An operation that looked at the phase before an await may come here after dispose:
    // its server would load a model while the window closes.
    if (this.phase === "disposed") {
      return;
    }
    this.phase = "started";
    this.waiting?.dispose();
    this.waiting = undefined;
    try {
      this.steps.starting();
      const { interpreter, eventsBefore } = choice ?? (await this.choose());
      this.startedWith = interpreter.command;
      this.eventsBeforeLastStart = eventsBefore;
      this.startedTrusted = this.steps.isTrusted();
      this.startUnderWay = true;
      await this.steps.start(interpreter);
    } finally {
      this.startUnderWay = false;
      this.startsEnded += 1;
    }
  }
}
